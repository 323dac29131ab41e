//! `cargo fuzz run multipart`: see `dispatcher::fuzzing::multipart`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::multipart(data));
