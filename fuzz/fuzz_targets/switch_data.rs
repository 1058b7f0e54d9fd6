#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cyberswitch_fuzz::switch_data(data));
