#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oslo_messaging::wire::fuzzing::notification(data));
