//! Unit tests of purges racing stores and upgrades on other threads: whatever the interleaving, nothing a purge covered is held once both are done.

use std::future::Future;

use tokio::runtime::Runtime;

use super::super::*;
use crate::domain::{Flags, Partition};

/// Rounds of the upgrade race. Without the purge gate, on 2 cores in a debug
/// build, it was lost in 30 to 500 rounds of 4,096.
const ROUNDS: usize = 4096;

/// Rounds of the store race, which is rarer: without the gate it was lost in
/// 1 to 9 rounds of 4,096 (16 stores each), so it runs twice as many.
const STORE_ROUNDS: usize = 2 * ROUNDS;

fn key() -> CacheKey {
    CacheKey {
        partition: Partition::Anonymous,
        id: ConversationId::parse("raced").unwrap(),
        flags: Flags::default(),
    }
}

/// A fresh entry, received now.
fn fresh() -> Arc<CachedResponse> {
    super::entry(2, Instant::now(), Duration::from_secs(60))
}

fn scope_of(round: usize, id: &ConversationId) -> PurgeScope<'_> {
    if round % 2 == 0 {
        PurgeScope::All
    } else {
        PurgeScope::Conversation(id)
    }
}

/// Busy-waits `pauses` short pauses.
fn spin(pauses: usize) {
    for _ in 0..pauses {
        std::hint::spin_loop();
    }
}

/// The head start one racer gives the other in `round`: swept over the
/// rounds, finely and then coarsely, so that some rounds land inside any
/// narrow window (where the race is lost depends on the build and the host).
fn offset(round: usize) -> usize {
    let step = if round % 512 < 256 { 4 } else { 16 };
    (round % 256) * step
}

/// Runs `racer` on one thread and a purge on another, released together,
/// the purge a little later in some rounds and a little earlier in others.
fn race(runtime: &Runtime, store: &Store, round: usize, racer: impl Future<Output = ()> + Send) {
    let offset = offset(round);
    let (racer_delay, purge_delay) = if round % 4 < 2 {
        (offset, 0)
    } else {
        (0, offset)
    };
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|threads| {
        threads.spawn(|| {
            start.wait();
            spin(racer_delay);
            runtime.block_on(racer);
        });
        threads.spawn(|| {
            start.wait();
            spin(purge_delay);
            let id = key().id;
            runtime.block_on(store.purge_where(scope_of(round, &id), |_| true));
        });
    });
}

/// Whether anything is held for the key now; drops it for the next round.
fn held_after(runtime: &Runtime, store: &Store) -> bool {
    runtime.block_on(async {
        let held = store.get(&key(), Instant::now()).await.is_some();
        store.remove(&key()).await;
        held
    })
}

/// The conversation's keys: every flag variant, anonymous and shared.
fn variants() -> Vec<CacheKey> {
    let mut keys = Vec::new();
    for bits in 0..8u8 {
        let flags = Flags {
            transcript: bits & 1 != 0,
            recording: bits & 2 != 0,
            analytics: bits & 4 != 0,
        };
        for partition in [Partition::Anonymous, Partition::Shared] {
            keys.push(CacheKey {
                partition,
                flags,
                ..key()
            });
        }
    }
    keys
}

#[test]
fn a_fetch_begun_before_a_purge_is_never_held_after_it() {
    let runtime = Runtime::new().unwrap();
    let store = Store::new(1 << 20, |_| {});
    let keys = variants();
    let mut rounds_held = 0;
    for round in 0..STORE_ROUNDS {
        // Every fetch began (took its epoch) before the purge started; they
        // store one after another, so the purge lands amid one of them.
        let epoch = store.epoch(&key().id);
        race(&runtime, &store, round, async {
            for key in &keys {
                let stored = store.insert_unless_superseded(key.clone(), fresh(), epoch);
                stored.await;
            }
        });
        let held = runtime.block_on(async {
            let mut held = false;
            for key in &keys {
                held |= store.get(key, Instant::now()).await.is_some();
                store.remove(key).await;
            }
            held
        });
        rounds_held += usize::from(held);
    }
    assert_eq!(rounds_held, 0, "rounds whose purged answer was held after");
}

#[test]
fn an_upgrade_never_brings_back_an_entry_a_purge_dropped() {
    let runtime = Runtime::new().unwrap();
    let store = Store::new(1 << 20, |_| {});
    let mut rounds_held = 0;
    for round in 0..ROUNDS {
        let current = fresh();
        let epoch = store.epoch(&key().id);
        let stored = store.insert_unless_superseded(key(), Arc::clone(&current), epoch);
        assert_eq!(runtime.block_on(stored), Inserted::New);
        let upgraded = Arc::new(current.with_variants(Vec::new()));
        race(
            &runtime,
            &store,
            round,
            store.upgrade(key(), &current, upgraded),
        );
        rounds_held += usize::from(held_after(&runtime, &store));
    }
    assert_eq!(rounds_held, 0, "rounds whose purged entry was held after");
}
