//! `cargo fuzz run schedule`: see `dispatcher::fuzzing::schedule`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::schedule(data));
