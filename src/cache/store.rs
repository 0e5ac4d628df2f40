//! Storage: a moka cache bounded by bytes, each entry expiring at its own deadline, with an index of each conversation's keys.
//!
//! moka evicts an entry at its `usable_until`; reads check the entry's own
//! instants as well, so nothing is served past its deadline even before
//! moka's housekeeping has run. Purging a conversation visits only its own
//! keys, listed in the [`IdIndex`] beside the entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::entry::{CachedResponse, Freshness};
use super::id_index::IdIndex;
use super::key::CacheKey;
use crate::domain::ConversationId;

/// Entries a purge of everything looks at between two yields to the thread's other tasks.
const PURGE_YIELD_EVERY: usize = 1024;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCause {
    /// Its lifetime ended.
    Lifetime,
    /// The byte bound needed the room.
    Size,
    /// An operator purged it.
    Purge,
    /// A newer answer took its place.
    Replaced,
}

impl EvictionCause {
    /// The `cause` label.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Lifetime => "lifetime",
            EvictionCause::Size => "size",
            EvictionCause::Purge => "purge",
            EvictionCause::Replaced => "replaced",
        }
    }
}

/// What [`Store::insert_unless_superseded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored where there was nothing.
    New,
    /// Stored in place of an older entry.
    Replaced,
    /// Not stored: a purge came in between, or a newer entry is held.
    Refused,
}

/// The in-memory tier.
#[derive(Clone)]
pub struct Store {
    entries: moka::future::Cache<CacheKey, Arc<CachedResponse>>,
    /// Purge epochs: a fetch that began before a purge of its conversation
    /// must not store its answer after it.
    epochs: Arc<Epochs>,
    /// Each conversation's keys, kept with every insert and eviction.
    index: Arc<IdIndex>,
}

/// The purge epoch of one conversation, as a fetch saw it when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    all: u64,
    conversation: u64,
}

/// Purge counters: one for purges of everything, one per purged conversation.
#[derive(Default)]
struct Epochs {
    all: AtomicU64,
    by_conversation: Mutex<HashMap<ConversationId, u64>>,
}

/// Past this many purged conversations remembered, the map starts over
/// (bumping `all`, so fetches in flight then are conservatively not stored).
const MAX_REMEMBERED_PURGES: usize = 100_000;

impl Epochs {
    fn of(&self, id: &ConversationId) -> Epoch {
        let by_conversation = self.lock();
        Epoch {
            all: self.all.load(Ordering::Acquire),
            conversation: by_conversation.get(id).copied().unwrap_or(0),
        }
    }

    fn bump(&self, scope: PurgeScope<'_>) {
        match scope {
            PurgeScope::All => {
                self.all.fetch_add(1, Ordering::AcqRel);
            }
            PurgeScope::Conversation(id) => {
                let mut by_conversation = self.lock();
                if by_conversation.len() >= MAX_REMEMBERED_PURGES {
                    by_conversation.clear();
                    self.all.fetch_add(1, Ordering::AcqRel);
                }
                *by_conversation.entry(id.clone()).or_default() += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, u64>> {
        self.by_conversation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// What a purge covers.
#[derive(Debug, Clone, Copy)]
pub enum PurgeScope<'a> {
    All,
    /// One conversation (some or all of its entries).
    Conversation(&'a ConversationId),
}

impl Store {
    /// A store holding at most `max_bytes` of entries, none longer than
    /// `max_ttl`, telling `on_evict` why each entry left.
    pub fn new(
        max_bytes: u64,
        max_ttl: Duration,
        on_evict: impl Fn(EvictionCause) + Send + Sync + 'static,
    ) -> Store {
        let index = Arc::new(IdIndex::default());
        let listed = Arc::clone(&index);
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<CachedResponse>| entry.weight())
            .expire_after(EntryDeadline)
            .time_to_live(max_ttl)
            .eviction_listener(move |key, entry, cause| {
                listed.left(&key, &entry);
                if let Some(cause) = eviction_cause(cause) {
                    on_evict(cause);
                }
            })
            .build();
        Store {
            entries,
            epochs: Arc::default(),
            index,
        }
    }

    /// The entry for `key` if it may still be served at `now`, fresh or stale.
    pub async fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.entries
            .get(key)
            .await
            .filter(|entry| entry.freshness(now) != Freshness::Dead)
    }

    /// The purge epoch of conversation `id` now; pass it to
    /// [`Store::insert_unless_superseded`].
    pub fn epoch(&self, id: &ConversationId) -> Epoch {
        self.epochs.of(id)
    }

    /// Stores `entry` unless a purge happened since `epoch` or the entry held
    /// for `key` is newer: a late answer never resurrects or overwrites.
    pub async fn insert_unless_superseded(
        &self,
        key: CacheKey,
        entry: Arc<CachedResponse>,
        epoch: Epoch,
    ) -> Inserted {
        let result = self
            .entries
            .entry(key.clone())
            .and_compute_with(|current| {
                let newer_held =
                    current.is_some_and(|held| held.value().received_at() > entry.received_at());
                let op = if newer_held || self.epoch(&key.id) != epoch {
                    Op::Nop
                } else {
                    // Listed before it is held: an eviction never precedes it.
                    self.index.held(&key, &entry);
                    Op::Put(entry)
                };
                std::future::ready(op)
            })
            .await;
        match result {
            CompResult::Inserted(_) => Inserted::New,
            CompResult::ReplacedWith(_) => Inserted::Replaced,
            _ => Inserted::Refused,
        }
    }

    /// Puts `upgraded` in place of `current` (the same answer, with more made
    /// of it), only if `current` is still the entry held for `key`.
    pub async fn upgrade(
        &self,
        key: CacheKey,
        current: &Arc<CachedResponse>,
        upgraded: Arc<CachedResponse>,
    ) {
        self.entries
            .entry(key.clone())
            .and_compute_with(|held| {
                let same = held.is_some_and(|held| Arc::ptr_eq(held.value(), current));
                std::future::ready(if same {
                    self.index.held(&key, &upgraded);
                    Op::Put(upgraded)
                } else {
                    Op::Nop
                })
            })
            .await;
    }

    /// Every entry held now (a moment's view; entries may come and go meanwhile).
    pub fn all(&self) -> Vec<(CacheKey, Arc<CachedResponse>)> {
        self.entries
            .iter()
            .map(|(key, entry)| ((*key).clone(), entry))
            .collect()
    }

    /// Drops the entry for `key`, if any.
    pub async fn remove(&self, key: &CacheKey) {
        self.entries.remove(key).await;
    }

    /// Drops every entry within `scope` that `drop` picks; returns how many.
    /// Within one conversation only its own keys are looked at.
    pub async fn purge_where(
        &self,
        scope: PurgeScope<'_>,
        drop: impl Fn(&CacheKey) -> bool,
    ) -> u64 {
        self.epochs.bump(scope);
        match scope {
            PurgeScope::Conversation(id) => self.purge_listed(id, drop).await,
            PurgeScope::All => self.purge_walking(drop).await,
        }
    }

    /// Drops the keys of conversation `id` that `drop` picks.
    async fn purge_listed(&self, id: &ConversationId, drop: impl Fn(&CacheKey) -> bool) -> u64 {
        let mut purged = 0;
        for key in self.index.keys_of(id) {
            if drop(&key) && self.entries.remove(&key).await.is_some() {
                purged += 1;
            }
        }
        purged
    }

    /// Walks every entry, dropping those `drop` picks.
    async fn purge_walking(&self, drop: impl Fn(&CacheKey) -> bool) -> u64 {
        let mut purged = 0;
        for (seen, (key, _)) in self.entries.iter().enumerate() {
            if drop(&key) && self.entries.remove(&*key).await.is_some() {
                purged += 1;
            }
            // A walk over a large cache lets the thread's other tasks (its
            // connections, the shared tier's driver) run in between.
            if seen % PURGE_YIELD_EVERY == PURGE_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
        }
        purged
    }

    /// Number of entries (approximate until pending housekeeping runs).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Bytes held, by the weigher (approximate until pending housekeeping runs).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending evictions now (tests and stats).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

/// Why moka let an entry go; a replacement is counted where it is decided
/// (a new answer, not a compressed upgrade of the same one), so none here.
fn eviction_cause(cause: RemovalCause) -> Option<EvictionCause> {
    match cause {
        RemovalCause::Expired => Some(EvictionCause::Lifetime),
        RemovalCause::Size => Some(EvictionCause::Size),
        RemovalCause::Explicit => Some(EvictionCause::Purge),
        RemovalCause::Replaced => None,
    }
}

/// moka expiry that reads each entry's own deadline, on insert and on replace.
struct EntryDeadline;

impl Expiry<CacheKey, Arc<CachedResponse>> for EntryDeadline {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.usable_until().saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.usable_until().saturating_duration_since(updated_at))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http::HeaderMap;

    use super::*;
    use crate::cache::policy::{EntryKind, Lifetime};
    use crate::domain::{Flags, Partition};

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
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(1 << 30, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(100_000, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(1 << 32, Duration::from_secs(3600), |_| {});
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
        let store = Store::new(100_000, Duration::from_secs(3600), |_| {});
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
}
