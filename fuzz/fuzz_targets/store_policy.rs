//! The `store_policy` fuzz target: the checks are in `checks/store_policy.rs`, shared with
//! the corpus replay in the proxy's own tests.

#![no_main]

#[path = "../checks/store_policy.rs"]
mod store_policy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| store_policy::check(data));
