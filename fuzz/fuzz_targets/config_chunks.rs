#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_fuzz::parsers::config_chunks(data));
