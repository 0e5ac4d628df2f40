//! Unit tests of the store: late answers and purges, deadlines, the byte bound, the id index kept with every insert and eviction, and hot entries never answering with what moka let go.

use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http::HeaderMap;

use super::*;
use crate::cache::policy::{EntryKind, Lifetime};
use crate::domain::{ConversationIdRef, Flags, Partition};

fn key(id: &str) -> CacheKey {
    CacheKey {
        partition: Partition::Anonymous,
        id: ConversationId::parse(id).unwrap(),
        flags: Flags::default(),
    }
}

fn entry(size: usize, received_at: Instant, fresh_for: Duration) -> Arc<CachedResponse> {
    let body = Bytes::from(vec![b'x'; size]);
    Arc::new(CachedResponse::new(
        http::StatusCode::OK,
        &HeaderMap::new(),
        body,
        received_at,
        Lifetime {
            kind: EntryKind::Complete,
            fresh_for,
            usable_for: fresh_for,
            hard_in: None,
        },
    ))
}

#[tokio::test]
async fn a_late_answer_never_replaces_a_newer_one_nor_survives_a_purge() {
    let store = Store::new(1 << 20, |_| {});
    let t0 = Instant::now();
    let newer = entry(10, t0 + Duration::from_secs(1), Duration::from_secs(60));
    let older = entry(20, t0, Duration::from_secs(60));
    let epoch = store.epoch(&key("a").id);
    assert_eq!(
        store.insert_unless_superseded(key("a"), newer, epoch).await,
        Inserted::New
    );
    assert_eq!(
        store.insert_unless_superseded(key("a"), older, epoch).await,
        Inserted::Refused
    );
    assert_eq!(store.get(&key("a"), t0).await.unwrap().body().len(), 10);

    let before_purge = store.epoch(&key("a").id);
    assert_eq!(store.purge_where(PurgeScope::All, |_| true).await, 1);
    let late = entry(30, t0 + Duration::from_secs(2), Duration::from_secs(60));
    let late = store.insert_unless_superseded(key("a"), late, before_purge);
    assert_eq!(late.await, Inserted::Refused);
    assert!(store.get(&key("a"), t0).await.is_none());
}

#[tokio::test]
async fn a_long_purge_lets_the_threads_other_tasks_run_and_drops_only_what_it_picks() {
    let store = Store::new(1 << 30, |_| {});
    let t0 = Instant::now();
    let count = 3 * PURGE_YIELD_EVERY;
    for n in 0..count {
        let key = key(&format!("c{n:05}"));
        let epoch = store.epoch(&key.id);
        let fresh = entry(10, t0, Duration::from_secs(60));
        store.insert_unless_superseded(key, fresh, epoch).await;
    }
    // The test's runtime has one thread: the task runs only if the purge yields.
    let other_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&other_ran);
    tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
    assert_eq!(store.purge_where(PurgeScope::All, |_| false).await, 0);
    assert!(other_ran.load(Ordering::Relaxed), "the purge never yielded");

    let even = |k: &CacheKey| k.id.as_str().ends_with(['0', '2', '4', '6', '8']);
    let purged = store.purge_where(PurgeScope::All, even).await;
    assert_eq!(purged, count as u64 / 2);
    assert!(store.get(&key("c00002"), t0).await.is_none());
    assert!(store.get(&key("c00003"), t0).await.is_some());
}

#[tokio::test]
async fn a_purge_of_one_conversation_does_not_stop_another_from_storing() {
    let store = Store::new(1 << 20, |_| {});
    let t0 = Instant::now();
    let b_epoch = store.epoch(&key("b").id);
    let a = key("a").id;
    store
        .purge_where(PurgeScope::Conversation(&a), |k| k.id == a)
        .await;
    let b = entry(10, t0, Duration::from_secs(60));
    let stored = store.insert_unless_superseded(key("b"), b, b_epoch).await;
    assert_eq!(stored, Inserted::New);
    let a_late = store
        .insert_unless_superseded(
            key("a"),
            entry(10, t0, Duration::from_secs(60)),
            store.epoch(&a),
        )
        .await;
    assert_eq!(
        a_late,
        Inserted::New,
        "a fetch begun after the purge stores"
    );
}

#[tokio::test]
async fn an_entry_past_its_deadline_is_not_returned() {
    let store = Store::new(1 << 20, |_| {});
    let t0 = Instant::now();
    store
        .insert_unless_superseded(
            key("a"),
            entry(10, t0, Duration::from_secs(5)),
            store.epoch(&key("a").id),
        )
        .await;
    assert!(store.get(&key("a"), t0).await.is_some());
    assert!(store
        .get(&key("a"), t0 + Duration::from_secs(5))
        .await
        .is_none());
}

#[tokio::test]
async fn a_replaced_entry_takes_the_new_deadline() {
    let store = Store::new(1 << 20, |_| {});
    let t0 = Instant::now();
    store
        .insert_unless_superseded(
            key("a"),
            entry(10, t0, Duration::from_millis(50)),
            store.epoch(&key("a").id),
        )
        .await;
    store
        .insert_unless_superseded(
            key("a"),
            entry(10, t0, Duration::from_secs(60)),
            store.epoch(&key("a").id),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    store.run_pending_tasks().await;
    assert!(store.get(&key("a"), Instant::now()).await.is_some());
}

#[tokio::test]
async fn the_byte_bound_holds() {
    let store = Store::new(100_000, |_| {});
    let t0 = Instant::now();
    for i in 0..100 {
        let id = format!("c{i}");
        store
            .insert_unless_superseded(
                key(&id),
                entry(10_000, t0, Duration::from_secs(60)),
                store.epoch(&key(&id).id),
            )
            .await;
    }
    store.run_pending_tasks().await;
    assert!(
        store.weighted_size() <= 100_000,
        "{}",
        store.weighted_size()
    );
    assert!(store.entry_count() < 100);
}

async fn hold(store: &Store, key: CacheKey, entry: Arc<CachedResponse>) -> Inserted {
    let epoch = store.epoch(&key.id);
    store.insert_unless_superseded(key, entry, epoch).await
}

fn variant(id: &str, partition: Partition, transcript: bool) -> CacheKey {
    CacheKey {
        partition,
        flags: Flags {
            transcript,
            ..Flags::default()
        },
        ..key(id)
    }
}

#[tokio::test]
async fn a_purge_of_one_conversation_among_100_000_visits_only_its_own() {
    let store = Store::new(1 << 32, |_| {});
    let t0 = Instant::now();
    for n in 0..100_000 {
        hold(
            &store,
            key(&format!("c{n}")),
            entry(1, t0, Duration::from_secs(60)),
        )
        .await;
    }
    let own = [
        variant("target", Partition::Anonymous, true),
        variant("target", Partition::Anonymous, false),
        variant("target", Partition::Shared, true),
    ];
    for key in &own {
        hold(&store, key.clone(), entry(1, t0, Duration::from_secs(60))).await;
    }
    let visited = AtomicUsize::new(0);
    let target = own[0].id.clone();
    let purged = store
        .purge_where(PurgeScope::Conversation(&target), |_| {
            visited.fetch_add(1, Ordering::Relaxed);
            true
        })
        .await;
    assert_eq!(purged, 3);
    assert_eq!(visited.load(Ordering::Relaxed), 3, "only its own entries");
    for key in &own {
        assert!(store.get(key, t0).await.is_none());
    }
    store.run_pending_tasks().await;
    assert_eq!(store.index.len(), 100_000);
    assert_eq!(store.entry_count(), 100_000);
}

#[tokio::test]
async fn the_index_follows_inserts_replacements_removals_and_moka_evictions() {
    let store = Store::new(100_000, |_| {});
    let t0 = Instant::now();
    let a = key("a");
    hold(&store, a.clone(), entry(10, t0, Duration::from_secs(60))).await;
    let later = t0 + Duration::from_secs(1);
    let replaced = hold(&store, a.clone(), entry(10, later, Duration::from_secs(60))).await;
    assert_eq!(replaced, Inserted::Replaced);
    store.run_pending_tasks().await;
    assert_eq!(
        store.index.keys_of(&a.id),
        std::slice::from_ref(&a),
        "kept when replaced"
    );
    let current = store.get(&a, t0).await.unwrap();
    let upgraded = Arc::new(current.with_variants(Vec::new()));
    store.upgrade(a.clone(), &current, upgraded).await;
    store.run_pending_tasks().await;
    assert_eq!(
        store.index.keys_of(&a.id),
        std::slice::from_ref(&a),
        "kept when upgraded"
    );
    store.remove(&a).await;
    store.run_pending_tasks().await;
    assert!(
        store.index.keys_of(&a.id).is_empty(),
        "forgotten when removed"
    );
    // Far more than the byte bound holds: moka evicts by size.
    for n in 0..100 {
        hold(
            &store,
            key(&format!("c{n}")),
            entry(10_000, t0, Duration::from_secs(60)),
        )
        .await;
    }
    store.run_pending_tasks().await;
    assert!(store.entry_count() < 100);
    assert_eq!(store.index.len() as u64, store.entry_count());
}

/// What a HIT looks up: the borrowed form of `key(id)`.
fn looked_up(id: &str) -> KeyRef<'_> {
    KeyRef {
        partition: Partition::Anonymous,
        id: ConversationIdRef::parse(id).unwrap(),
        flags: Flags::default(),
    }
}

/// Reads `id` enough times that this thread's hot entries answer at least once.
async fn read_hot(store: &Store, id: &str, now: Instant) -> Option<Arc<CachedResponse>> {
    let mut last = None;
    for _ in 0..3 {
        last = store.get_fresh(&looked_up(id), now).await;
    }
    last
}

#[tokio::test]
async fn a_hot_entry_is_never_answered_after_the_store_changes() {
    let store = Store::new(1 << 20, |_| {});
    let t0 = Instant::now();
    let minute = Duration::from_secs(60);
    let first = entry(10, t0, minute);
    hold(&store, key("a"), Arc::clone(&first)).await;
    assert!(Arc::ptr_eq(
        &read_hot(&store, "a", t0).await.unwrap(),
        &first
    ));
    let later = t0 + minute;
    assert!(
        read_hot(&store, "a", later).await.is_none(),
        "held, but no longer fresh"
    );

    let second = entry(20, t0 + Duration::from_secs(1), minute);
    let replaced = hold(&store, key("a"), Arc::clone(&second)).await;
    assert_eq!(replaced, Inserted::Replaced);
    let found = store.get_fresh(&looked_up("a"), t0).await.unwrap();
    assert!(Arc::ptr_eq(&found, &second), "a replacement");

    let third = entry(30, t0 + Duration::from_secs(1), minute);
    read_hot(&store, "a", t0).await;
    store.upgrade(key("a"), &second, Arc::clone(&third)).await;
    let found = store.get_fresh(&looked_up("a"), t0).await.unwrap();
    assert!(Arc::ptr_eq(&found, &third), "an upgrade");

    read_hot(&store, "a", t0).await;
    store.remove(&key("a")).await;
    assert!(
        store.get_fresh(&looked_up("a"), t0).await.is_none(),
        "a removal"
    );

    for scope in [PurgeScope::Conversation(&key("a").id), PurgeScope::All] {
        hold(&store, key("a"), entry(10, t0, minute)).await;
        assert!(read_hot(&store, "a", t0).await.is_some());
        store.purge_where(scope, |_| true).await;
        let after = store.get_fresh(&looked_up("a"), t0).await;
        assert!(after.is_none(), "a purge of {scope:?}");
    }
}

#[tokio::test]
async fn an_entry_moka_evicts_is_retired() {
    let store = Store::new(1 << 20, |_| {});
    // Fresh for an hour from when it is asked at, but moka lets it go half
    // a second from now, at its `usable_until`.
    let received = Instant::now() - Duration::from_secs(1);
    let short = Arc::new(CachedResponse::new(
        http::StatusCode::OK,
        &HeaderMap::new(),
        Bytes::from_static(b"{}"),
        received,
        Lifetime {
            kind: EntryKind::Complete,
            fresh_for: Duration::from_secs(3600),
            usable_for: Duration::from_millis(1500),
            hard_in: None,
        },
    ));
    hold(&store, key("a"), Arc::clone(&short)).await;
    assert!(read_hot(&store, "a", received).await.is_some());
    // Await moka's eviction of it: housekeeping finds it past its lifetime.
    for _ in 0..400 {
        store.run_pending_tasks().await;
        if store.entry_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.entry_count(), 0, "moka evicted it");
    assert!(short.is_retired());
    // Still fresh by the instant it is asked at: only its retirement lets it go.
    let after = store.get_fresh(&looked_up("a"), received).await;
    assert!(after.is_none());
}

mod purge_races;
