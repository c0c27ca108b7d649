//! Arbitrary bytes cut anywhere, partial sends and sends in flight, time from 1 ms to
//! minutes, EOF and shutdown, input after `wants_read` turned false; every invariant
//! of the harness after every step.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duet_http::testing::fuzz::connection(data));
