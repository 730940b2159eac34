//! The program's decoder for this protocol, through `socketeer_cli::fuzzing::hub_lines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (data, cuts) = socketeer::fuzzing::split_input(input);
    socketeer_cli::fuzzing::hub_lines(data, &cuts);
});
