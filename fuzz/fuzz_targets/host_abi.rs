//! `cargo fuzz run host_abi`: see `dispatcher::fuzzing::host_abi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatcher::fuzzing::host_abi(data));
