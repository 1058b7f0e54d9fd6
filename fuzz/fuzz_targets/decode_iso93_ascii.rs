#![no_main]
use std::sync::OnceLock;

static SPEC: OnceLock<cyberswitch::iso8583::Spec> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| cyberswitch_fuzz::decode(&SPEC, "iso93-ascii", data));
