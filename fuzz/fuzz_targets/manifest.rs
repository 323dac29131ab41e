//! `cargo fuzz run manifest`: see `dispatcher::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::manifest(data));
