//! Every stored input of every fuzz corpus (`fuzz/corpus/<target>/`), run through its target's checks.
//!
//! The checks are the fuzz targets' own (`fuzz/checks/`), compiled here as
//! well, so `cargo test` replays what the fuzzers found without a nightly
//! compiler or libFuzzer.

use std::path::Path;

#[path = "../../fuzz/checks/accept_encoding.rs"]
mod accept_encoding;
#[path = "../../fuzz/checks/common.rs"]
mod common;
#[path = "../../fuzz/checks/conversation_id.rs"]
mod conversation_id;
#[path = "../../fuzz/checks/head_gate.rs"]
mod head_gate;
#[path = "../../fuzz/checks/query_flags.rs"]
mod query_flags;
#[path = "../../fuzz/checks/store_policy.rs"]
mod store_policy;

/// Runs `check` on every file of `fuzz/corpus/{target}/`; there must be some.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{target}: an empty corpus");
}

#[test]
fn the_query_flags_corpus_passes() {
    replay("query_flags", query_flags::check);
}

#[test]
fn the_conversation_id_corpus_passes() {
    replay("conversation_id", conversation_id::check);
}

#[test]
fn the_store_policy_corpus_passes() {
    replay("store_policy", store_policy::check);
}

#[test]
fn the_accept_encoding_corpus_passes() {
    replay("accept_encoding", accept_encoding::check);
}

#[test]
fn the_head_gate_corpus_passes() {
    replay("head_gate", head_gate::check);
}

#[test]
fn every_fuzz_target_has_its_corpus_replayed() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(targets)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .collect();
    names.sort();
    let replayed = [
        "accept_encoding",
        "conversation_id",
        "head_gate",
        "query_flags",
        "store_policy",
    ];
    assert_eq!(names, replayed, "a target whose corpus no test replays");
}
