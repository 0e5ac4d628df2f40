//! The `accept_encoding` fuzz target: the checks are in `checks/accept_encoding.rs`, shared with
//! the corpus replay in the proxy's own tests.

#![no_main]

#[path = "../checks/accept_encoding.rs"]
mod accept_encoding;

libfuzzer_sys::fuzz_target!(|data: &[u8]| accept_encoding::check(data));
