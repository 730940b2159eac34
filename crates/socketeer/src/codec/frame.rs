//! [`FrameCodec`]: length-prefixed frames (4-byte big-endian length, then the payload), bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, ErrorKind};

/// Length-prefixed frames: a 4-byte big-endian payload length, then the payload.
///
/// tokio-util's `LengthDelimitedCodec` speaks the same format, but it reserves the announced
/// length as soon as it reads a header; this codec lets memory grow only as payload bytes arrive,
/// so a hostile header costs nothing. Lengths over `max_length` are refused from the header alone.
///
/// ```
/// use bytes::BytesMut;
/// use socketeer::codec::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(&b"ping"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x04ping");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"ping"[..]));
/// # Ok::<(), socketeer::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_length: usize,
}

const HEADER: usize = 4;

impl FrameCodec {
    /// A codec for frames whose payload is at most `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self { max_length }
    }

    /// The largest payload accepted.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn too_large(&self, len: usize) -> Error {
        Error::new(
            ErrorKind::TooLarge,
            format!(
                "frame of {len} bytes is over the limit of {} bytes",
                self.max_length
            ),
        )
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max_length {
            return Err(self.too_large(len));
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        buf.advance(HEADER);
        Ok(Some(buf.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "stream ended inside a frame ({} bytes of it received)",
                    buf.len()
                ),
            )),
        }
    }
}

impl<T: Buf> Encoder<T> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, payload: T, dst: &mut BytesMut) -> Result<(), Error> {
        let len = payload.remaining();
        if len > self.max_length {
            return Err(self.too_large(len));
        }
        let header = u32::try_from(len).map_err(|_| self.too_large(len))?;
        dst.reserve(HEADER + len);
        dst.put_u32(header);
        dst.put(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_whole_frame_without_reserving_it() {
        let mut codec = FrameCodec::new(1 << 24);
        let mut buf = BytesMut::from(&[0, 0xff, 0, 0, 1, 2][..]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        assert!(
            buf.capacity() < 1024,
            "no reservation for the announced length"
        );
    }

    #[test]
    fn refuses_oversized_headers_and_truncated_frames() {
        let mut codec = FrameCodec::new(3);
        let mut buf = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(
            codec.decode(&mut buf).expect_err("big").kind(),
            ErrorKind::TooLarge
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 9][..]);
        assert_eq!(
            codec.decode_eof(&mut buf).expect_err("eof").kind(),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(
            codec
                .encode(&b"four"[..], &mut BytesMut::new())
                .expect_err("big")
                .kind(),
            ErrorKind::TooLarge
        );
    }

    #[test]
    fn empty_frames_round_trip() {
        let mut codec = FrameCodec::new(0);
        let mut buf = BytesMut::new();
        codec.encode(&b""[..], &mut buf).expect("encode");
        assert_eq!(
            codec.decode(&mut buf).expect("decode").as_deref(),
            Some(&b""[..])
        );
        assert!(buf.is_empty());
    }
}
