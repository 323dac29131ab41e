//! `cargo fuzz run cgi`: see `dispatcher::fuzzing::cgi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::cgi(data));
