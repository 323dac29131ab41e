//! `cargo fuzz run route`: see `dispatcher::fuzzing::route`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::route(data));
