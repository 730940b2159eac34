//! `FrameCodec`: the same frames however the bytes are split, none over the limit, and
//! encoding them again gives back the bytes they came from.
#![no_main]

use bytes::BytesMut;
use socketeer::codec::FrameCodec;
use socketeer::fuzzing::{assert_split_invariant, decode_in_pieces, split_input};
use tokio_util::codec::Encoder;

const MAX: usize = 1024;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (data, cuts) = split_input(input);
    assert_split_invariant(|| FrameCodec::new(MAX), data, &cuts);
    let mut again = BytesMut::new();
    for frame in decode_in_pieces(FrameCodec::new(MAX), data, &cuts).0 {
        assert!(frame.len() <= MAX, "a frame over the limit was returned");
        FrameCodec::new(MAX)
            .encode(&frame[..], &mut again)
            .expect("a decoded frame encodes");
    }
    assert_eq!(
        &data[..again.len()],
        &again[..],
        "re-encoding differs from the input"
    );
});
