//! [`LineBatch`]: every complete line already received, in one piece, so a chat client's burst
//! costs one buffer split instead of one per line.

use bytes::{Bytes, BytesMut};
use socketeer::{Error, ErrorKind};
use tokio_util::codec::Decoder;

/// Decodes up to `max_lines` complete lines at once (each at most `max_line` bytes before its
/// `\n`), returned together with their line endings. At end of input an unterminated last line is
/// returned as it is.
#[derive(Debug)]
pub(crate) struct LineBatch {
    pub(crate) max_line: usize,
    pub(crate) max_lines: usize,
}

impl LineBatch {
    fn too_long(&self) -> Error {
        Error::new(
            ErrorKind::TooLarge,
            format!("line longer than {} bytes", self.max_line),
        )
    }
}

impl Decoder for LineBatch {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let mut end = 0;
        let mut lines = 0;
        while lines < self.max_lines {
            let Some(at) = buf[end..].iter().position(|&b| b == b'\n') else {
                break;
            };
            if at > self.max_line {
                return Err(self.too_long());
            }
            end += at + 1;
            lines += 1;
        }
        if lines == 0 && buf.len() > self.max_line {
            return Err(self.too_long());
        }
        Ok((end > 0).then(|| buf.split_to(end).freeze()))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(lines) => Ok(Some(lines)),
            None if buf.is_empty() => Ok(None),
            None => Ok(Some(buf.split().freeze())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_complete_lines_up_to_the_count_and_checks_each_length() {
        let mut buf = BytesMut::from(&b"a\nbb\nccc\npartial"[..]);
        let mut decoder = LineBatch {
            max_line: 8,
            max_lines: 2,
        };
        assert_eq!(
            decoder.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"a\nbb\n"[..])
        );
        decoder.max_lines = usize::MAX;
        assert_eq!(
            decoder.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"ccc\n"[..])
        );
        assert_eq!(decoder.decode(&mut buf).expect("ok"), None);
        assert_eq!(
            decoder.decode_eof(&mut buf).expect("eof").as_deref(),
            Some(&b"partial"[..])
        );
        let mut long = BytesMut::from(&b"ok\n0123456789\n"[..]);
        assert!(
            decoder.decode(&mut long).is_err(),
            "a long line fails even behind a short one"
        );
        let mut unterminated = BytesMut::from(&b"0123456789"[..]);
        assert!(decoder.decode(&mut unterminated).is_err());
    }

    proptest::proptest! {
        /// However the bytes arrive, the same bytes come out in order, and a too-long line
        /// fails either way.
        #[test]
        fn batches_carry_the_same_bytes_however_split(
            input in proptest::collection::vec(proptest::sample::select(b"ab\r\n".to_vec()), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            max_lines in 1usize..5,
        ) {
            let make = || LineBatch { max_line: 8, max_lines };
            let run = |cuts: &[usize]| {
                let (items, err) = socketeer::fuzzing::decode_in_pieces(make(), &input, cuts);
                (items.concat(), err.is_some())
            };
            let (whole, whole_failed) = run(&[]);
            let (pieces, pieces_failed) = run(&cuts);
            proptest::prop_assert_eq!(whole_failed, pieces_failed);
            let too_long = input.split(|&b| b == b'\n').any(|line| line.len() > 8);
            proptest::prop_assert_eq!(whole_failed, too_long);
            if !too_long {
                proptest::prop_assert_eq!(&whole, &input);
                proptest::prop_assert_eq!(&pieces, &input);
            }
        }
    }
}
