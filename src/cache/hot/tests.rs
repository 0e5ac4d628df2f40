//! Unit tests of a thread's hot entries: held until retired, bounded, and every sixteenth lookup left to moka.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use super::*;
use crate::cache::key::KeyRef;
use crate::cache::policy::{EntryKind, Lifetime};
use crate::domain::{ConversationId, ConversationIdRef, Flags, Partition};

fn key(id: &str) -> CacheKey {
    CacheKey {
        partition: Partition::Anonymous,
        id: ConversationId::parse(id).unwrap(),
        flags: Flags::default(),
    }
}

fn entry(size: usize) -> Arc<CachedResponse> {
    Arc::new(CachedResponse::new(
        http::StatusCode::OK,
        &HeaderMap::new(),
        Bytes::from(vec![b'x'; size]),
        Instant::now(),
        Lifetime {
            kind: EntryKind::Complete,
            fresh_for: Duration::from_secs(60),
            usable_for: Duration::from_secs(60),
            hard_in: None,
        },
    ))
}

/// What the map answers for `key`, stepping over the lookup moka would record.
fn held<Q>(hot: &HotEntries, wanted: &Q) -> Option<Arc<CachedResponse>>
where
    Q: Equivalent<CacheKey> + Hash + ?Sized,
{
    // Skip the lookup moka records, so the answer is the map's.
    let thread_lookups = hot.threads.get().map_or(0, |t| t.borrow().lookups);
    if (thread_lookups + 1) % RECORD_EVERY == 0 {
        let _ = hot.get(&key("skip"));
    }
    match hot.get(wanted) {
        Hot::Held(entry) => Some(entry),
        Hot::Ask => None,
    }
}

#[test]
fn an_entry_is_held_until_the_store_retires_it() {
    let hot = HotEntries::default();
    let a = entry(10);
    assert!(held(&hot, &key("a")).is_none(), "nothing held yet");
    hot.hold(key("a"), &a);
    let found = held(&hot, &key("a")).expect("held");
    assert!(Arc::ptr_eq(&found, &a));
    // Found by a borrowed key too, as a HIT looks it up.
    let borrowed = KeyRef {
        partition: Partition::Anonymous,
        id: ConversationIdRef::parse("a").unwrap(),
        flags: Flags::default(),
    };
    assert!(held(&hot, &borrowed).is_some());

    a.retire();
    assert!(held(&hot, &key("a")).is_none(), "retired: not answered");
    let thread = hot.threads.get().unwrap().borrow();
    assert!(thread.entries.is_empty(), "and let go");
}

#[test]
fn the_map_does_not_keep_an_entry_alive() {
    let hot = HotEntries::default();
    let a = entry(10);
    hot.hold(key("a"), &a);
    let listed = Arc::downgrade(&a);
    // The store lets go of it (without retiring it, to show the map alone
    // would not keep it): its memory is freed, and the map asks the store.
    drop(a);
    assert!(
        listed.upgrade().is_none(),
        "freed with the last strong reference"
    );
    assert!(held(&hot, &key("a")).is_none());
}

#[test]
fn a_retired_entry_is_not_held() {
    let hot = HotEntries::default();
    let gone = entry(10);
    gone.retire();
    hot.hold(key("a"), &gone);
    // Not even kept until the next lookup: it would hold its memory.
    let thread = hot.threads.get_or_default().borrow();
    assert!(thread.entries.is_empty());
}

#[test]
fn every_sixteenth_lookup_is_left_to_moka() {
    let hot = HotEntries::default();
    let a = entry(10);
    hot.hold(key("a"), &a);
    let answers: Vec<bool> = (0..RECORD_EVERY * 3)
        .map(|_| matches!(hot.get(&key("a")), Hot::Held(_)))
        .collect();
    let asked = answers.iter().filter(|held| !**held).count();
    assert_eq!(asked, 3, "one lookup in {RECORD_EVERY} asks moka");
}

#[test]
fn large_entries_are_never_held_and_a_full_map_starts_again() {
    let hot = HotEntries::default();
    hot.hold(key("big"), &entry(MAX_WEIGHT as usize + 1));
    assert!(held(&hot, &key("big")).is_none());

    let small = entry(10);
    for n in 0..CAPACITY {
        hot.hold(key(&format!("k{n}")), &small);
    }
    assert_eq!(hot.threads.get().unwrap().borrow().entries.len(), CAPACITY);
    hot.hold(key("one-more"), &small);
    let thread = hot.threads.get().unwrap().borrow();
    assert_eq!(thread.entries.len(), 1, "emptied, then the new one held");
    assert!(thread.entries.contains_key(&key("one-more")));
}

#[test]
fn each_thread_holds_its_own() {
    let hot = Arc::new(HotEntries::default());
    let a = entry(10);
    hot.hold(key("a"), &a);
    let other = Arc::clone(&hot);
    std::thread::spawn(move || {
        assert!(matches!(other.get(&key("a")), Hot::Ask));
    })
    .join()
    .unwrap();
    assert!(held(&hot, &key("a")).is_some());
}
