//! The HMAC challenge's answer decoder: the same answer however the bytes are split.
#![no_main]

use socketeer::fuzzing::{answer_decoder, assert_split_invariant, split_input};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (data, cuts) = split_input(input);
    assert_split_invariant(answer_decoder, data, &cuts);
});
