//! The `conversation_id` fuzz target: the checks are in `checks/conversation_id.rs`, shared with
//! the corpus replay in the proxy's own tests.

#![no_main]

#[path = "../checks/common.rs"]
mod common;
#[path = "../checks/conversation_id.rs"]
mod conversation_id;

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_id::check(data));
