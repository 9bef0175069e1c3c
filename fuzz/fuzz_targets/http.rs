#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_fuzz::services::http(data));
