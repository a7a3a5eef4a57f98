#![no_main]
//! cargo fuzz run rest_bodies: see fuzz/harness.rs for the input layout and the invariants checked.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::rest_bodies(data));
