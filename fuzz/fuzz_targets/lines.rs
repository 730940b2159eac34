//! `LineCodec`: the same lines however the bytes are split, none over the limit.
#![no_main]

use socketeer::codec::LineCodec;
use socketeer::fuzzing::{assert_split_invariant, decode_in_pieces, split_input};

const MAX: usize = 64;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (data, cuts) = split_input(input);
    assert_split_invariant(|| LineCodec::new(MAX), data, &cuts);
    let mut consumed = 0;
    for line in decode_in_pieces(LineCodec::new(MAX), data, &cuts).0 {
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        assert!(body.len() <= MAX, "a line over the limit was returned");
        assert!(!body.contains(&b'\n'), "two lines returned as one");
        assert_eq!(
            &data[consumed..consumed + line.len()],
            &line[..],
            "bytes changed"
        );
        consumed += line.len();
    }
});
