//! The `head_gate` fuzz target: the checks are in `checks/head_gate.rs`, shared with
//! the corpus replay in the proxy's own tests.

#![no_main]

#[path = "../checks/head_gate.rs"]
mod head_gate;

libfuzzer_sys::fuzz_target!(|data: &[u8]| head_gate::check(data));
