#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lab_fuzz_targets::http_response(data));
