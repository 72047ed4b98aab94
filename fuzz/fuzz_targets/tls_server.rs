#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lab_fuzz_targets::tls_server(data));
