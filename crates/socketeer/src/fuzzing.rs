//! Helpers for the fuzz targets in `fuzz/` and the codec property tests (feature `fuzzing`).
//! Not an API: nothing here is promised to stay.

use std::fmt::Debug;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::Error;

/// The decoder of authentication answers (HMAC challenge-response), its answers as text.
pub fn answer_decoder() -> impl Decoder<Item = String, Error = Error> {
    crate::auth::answer_decoder()
}

/// Decodes `input` as `tokio_util`'s `FramedRead` would if the bytes arrived in pieces ending at
/// `cuts` (each taken modulo `input.len() + 1`, any order): after each piece every item the
/// buffer holds, and at the end of input the `decode_eof` items. Returns the items and the
/// error that stopped decoding, if one did (as it stops a connection).
pub fn decode_in_pieces<D: Decoder>(
    mut decoder: D,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<D::Item>, Option<D::Error>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(err) => return (items, Some(err)),
            }
        }
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return (items, None),
            Err(err) => return (items, Some(err)),
        }
    }
}

/// Panics unless `input` decodes to the same items, and fails after the same item, in one piece
/// and in the pieces `cuts` marks. (Error texts may differ: a decoder can notice a problem
/// sooner or later; what it returns may not.)
pub fn assert_split_invariant<D>(make: impl Fn() -> D, input: &[u8], cuts: &[usize])
where
    D: Decoder,
    D::Item: PartialEq + Debug,
    D::Error: Debug,
{
    let (whole, whole_err) = decode_in_pieces(make(), input, &[]);
    let (pieces, pieces_err) = decode_in_pieces(make(), input, cuts);
    assert_eq!(whole, pieces, "the items differ by split (cuts {cuts:?})");
    assert_eq!(
        whole_err.is_some(),
        pieces_err.is_some(),
        "fails one way and not the other: whole {whole_err:?}, in pieces {pieces_err:?}"
    );
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
