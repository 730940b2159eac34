//! [`LineCodec`]: newline-terminated lines, bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, ErrorKind};

/// Splits a byte stream into lines ending in `\n`, each at most `max_length` bytes long, not
/// counting the `\n`.
///
/// Decoded lines keep their terminator, as Python's `readline()` does, so nothing the peer sent
/// is lost (`\r\n` stays `\r\n`); [`trim_line_end`] strips it. At end of stream an unterminated
/// last line is returned as it is. A line over the limit is an [`ErrorKind::TooLarge`] error as
/// soon as the limit is passed, without waiting for its end.
///
/// ```
/// use bytes::BytesMut;
/// use socketeer::codec::LineCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::new(16);
/// let mut buf = BytesMut::from(&b"hello\r\nwor"[..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hello\r\n"[..]));
/// assert_eq!(codec.decode(&mut buf)?, None); // "wor" waits for its newline
/// # Ok::<(), socketeer::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_length: usize,
    /// Where to resume looking for `\n`: everything before it has been searched already.
    searched: usize,
}

impl LineCodec {
    /// A codec for lines of at most `max_length` bytes (excluding the `\n`).
    pub fn new(max_length: usize) -> Self {
        Self {
            max_length,
            searched: 0,
        }
    }

    /// The longest line accepted.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn too_long(&self) -> Error {
        Error::new(
            ErrorKind::TooLarge,
            format!("line longer than {} bytes", self.max_length),
        )
    }
}

/// `line` without its trailing `\n` or `\r\n`.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let start = self.searched.min(buf.len());
        match buf[start..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = start + offset;
                self.searched = 0;
                if end > self.max_length {
                    return Err(self.too_long());
                }
                Ok(Some(buf.split_to(end + 1).freeze()))
            }
            None if buf.len() > self.max_length => Err(self.too_long()),
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => {
                self.searched = 0;
                Ok(Some(buf.split().freeze()))
            }
        }
    }
}

impl<T: Buf> Encoder<T> for LineCodec {
    type Error = Error;

    /// Writes `line` and a `\n` (unless it already ends in one).
    fn encode(&mut self, mut line: T, dst: &mut BytesMut) -> Result<(), Error> {
        let len = line.remaining();
        let mut last = None;
        dst.reserve(len + 1);
        while line.has_remaining() {
            let chunk = line.chunk();
            last = chunk.last().copied().or(last);
            dst.put_slice(chunk);
            let n = chunk.len();
            line.advance(n);
        }
        if last != Some(b'\n') {
            dst.put_u8(b'\n');
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Result<Vec<Bytes>, Error> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(line) = codec.decode_eof(&mut buf)? {
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_keeping_terminators_and_a_final_partial_line() {
        let lines = decode_all(&mut LineCodec::new(8), b"a\nbc\r\n\nlast").expect("lines");
        assert_eq!(lines, vec![&b"a\n"[..], b"bc\r\n", b"\n", b"last"]);
        assert_eq!(trim_line_end(b"bc\r\n"), b"bc");
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_byte_more_fails_before_its_end() {
        assert!(decode_all(&mut LineCodec::new(4), b"abcd\n").is_ok());
        let mut codec = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcde"[..]);
        let err = codec.decode(&mut buf).expect_err("too long");
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[test]
    fn resumes_search_where_it_stopped() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        buf.extend_from_slice(b"def\nx");
        assert_eq!(
            codec.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"abcdef\n"[..])
        );
        assert_eq!(&buf[..], b"x");
    }

    #[test]
    fn encodes_with_exactly_one_newline() {
        let mut dst = BytesMut::new();
        LineCodec::new(8)
            .encode(&b"hi"[..], &mut dst)
            .expect("encode");
        LineCodec::new(8)
            .encode(&b"yo\n"[..], &mut dst)
            .expect("encode");
        assert_eq!(&dst[..], b"hi\nyo\n");
    }
}
