//! The `query_flags` fuzz target: the checks are in `checks/query_flags.rs`, shared with
//! the corpus replay in the proxy's own tests.

#![no_main]

#[path = "../checks/common.rs"]
mod common;
#[path = "../checks/query_flags.rs"]
mod query_flags;

libfuzzer_sys::fuzz_target!(|data: &[u8]| query_flags::check(data));
