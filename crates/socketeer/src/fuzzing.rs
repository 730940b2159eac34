//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`). Not an API: nothing here
//! is promised to stay.

use std::fmt::Debug;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::Error;

/// The decoder of authentication answers (HMAC challenge-response), its answers as text.
pub fn answer_decoder() -> impl Decoder<Item = String, Error = Error> {
    crate::auth::answer_decoder()
}

/// What a decoder made of a stream of bytes: its items, then `Err` with the error if one ended
/// the stream.
pub type Outcome<T> = Vec<Result<T, String>>;

/// Decodes `data` as `tokio_util`'s `FramedRead` would if the bytes arrived in the pieces that
/// `cuts` marks (offsets into `data`, any order, out-of-range ones ignored): after each piece
/// every item the buffer holds, and at the end of input the `decode_eof` items. Stops at the
/// first error, as a connection does.
pub fn decode_in_pieces<D>(mut decoder: D, data: &[u8], cuts: &[usize]) -> Outcome<D::Item>
where
    D: Decoder,
    D::Error: std::fmt::Display,
{
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(data.len());
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut start = 0;
    for end in cuts {
        buf.extend_from_slice(&data[start..end]);
        start = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break,
                Err(err) => {
                    out.push(Err(err.to_string()));
                    return out;
                }
            }
        }
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(item)) => out.push(Ok(item)),
            Ok(None) => return out,
            Err(err) => {
                out.push(Err(err.to_string()));
                return out;
            }
        }
    }
}

/// Panics unless `data` decodes to the same items, and fails at the same item, in one piece and
/// in the pieces `cuts` marks. (Error texts may differ: a decoder can notice a problem sooner
/// or later; what it returns may not.)
pub fn assert_split_invariant<D>(make: impl Fn() -> D, data: &[u8], cuts: &[usize])
where
    D: Decoder,
    D::Item: PartialEq + Debug,
    D::Error: std::fmt::Display,
{
    let whole = decode_in_pieces(make(), data, &[]);
    let pieces = decode_in_pieces(make(), data, cuts);
    let shape = |o: &Outcome<D::Item>| -> Vec<bool> { o.iter().map(Result::is_ok).collect() };
    assert_eq!(
        shape(&whole),
        shape(&pieces),
        "items or failure differ by split: whole {whole:?}, in pieces {pieces:?}"
    );
    for (a, b) in whole.iter().zip(&pieces) {
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a, b, "an item differs by split (cuts {cuts:?})");
        }
    }
}

/// Splits a fuzzer's input into the bytes to decode and where to cut them: the first byte says
/// how many cuts (0–7) and each following byte places one, scaled to the data's length.
pub fn split_input(input: &[u8]) -> (&[u8], Vec<usize>) {
    let Some((&first, rest)) = input.split_first() else {
        return (input, Vec::new());
    };
    let count = usize::from(first % 8).min(rest.len());
    let (places, data) = rest.split_at(count);
    let cuts = places
        .iter()
        .map(|&p| usize::from(p) * data.len() / 256)
        .collect();
    (data, cuts)
}
