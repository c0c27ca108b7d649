//! The same input delivered whole and cut anywhere (with partial sends) gives
//! byte-identical output and the same end state.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duet_http::testing::fuzz::split(data));
