#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cyberswitch_fuzz::frames("hex4", data));
