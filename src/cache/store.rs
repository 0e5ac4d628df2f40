//! Storage: a moka cache bounded by bytes, each entry expiring at its own deadline, with an index of each conversation's keys.
//!
//! moka evicts an entry at its `usable_until`; reads check the entry's own
//! instants as well, so nothing is served past its deadline even before
//! moka's housekeeping has run. Purging a conversation visits only its own
//! keys, listed in the [`IdIndex`] beside the entries. A HIT looks in its
//! thread's [`HotEntries`] first; every entry moka lets go is retired, so
//! they never answer with it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::{Equivalent, Expiry};

use super::entry::{CachedResponse, Freshness};
use super::hot::{Hot, HotEntries};
use super::id_index::IdIndex;
use super::key::{CacheKey, KeyRef};
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
    entries: moka::future::Cache<CacheKey, Arc<CachedResponse>, ahash::RandomState>,
    /// Purge epochs: a fetch that began before a purge of its conversation
    /// must not store its answer after it.
    epochs: Arc<Epochs>,
    /// Stores and upgrades hold it shared, purges alone: a store or upgrade
    /// happens wholly before a purge (which then drops what it put) or
    /// wholly after (and sees the purge's epoch). moka does not order a
    /// removal against a compute on the same key by itself.
    purge_gate: Arc<tokio::sync::RwLock<()>>,
    /// Each conversation's keys, kept with every insert and eviction.
    index: Arc<IdIndex>,
    /// Each thread's hot entries, in front of moka.
    hot: Arc<HotEntries>,
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
    /// A store holding at most `max_bytes` of entries, each until its own
    /// `usable_until`, telling `on_evict` why each entry left.
    pub fn new(max_bytes: u64, on_evict: impl Fn(EvictionCause) + Send + Sync + 'static) -> Store {
        let index = Arc::new(IdIndex::default());
        let listed = Arc::clone(&index);
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<CachedResponse>| entry.weight())
            // Each entry's own deadline is its only clock: no `time_to_live`
            // beside it, so moka keeps no write-order list (one node less
            // per entry, less work per insert and per read), and a reload
            // that lengthens lifetimes applies in full.
            .expire_after(EntryDeadline)
            // moka tells of a replacement or a removal before the call
            // that made it returns, and of an eviction when it makes it:
            // the entry is retired, and no thread's hot entries answer with it.
            .eviction_listener(move |key, entry, cause| {
                entry.retire();
                listed.left(&key, &entry);
                if let Some(cause) = eviction_cause(cause) {
                    on_evict(cause);
                }
            })
            // aHash, keyed at random per process: every lookup hashes its
            // key, and SipHash (the default) cost a HIT about 1.5% of its
            // instructions; a client choosing ids still cannot aim at one
            // bucket without the key.
            .build_with_hasher(ahash::RandomState::new());
        Store {
            entries,
            epochs: Arc::default(),
            purge_gate: Arc::default(),
            index,
            hot: Arc::default(),
        }
    }

    /// The fresh entry for `key` at `now`: from this thread's hot entries
    /// when they hold it, else from moka (and then held there).
    pub async fn get_fresh(&self, key: &KeyRef<'_>, now: Instant) -> Option<Arc<CachedResponse>> {
        if let Hot::Held(entry) = self.hot.get(key) {
            if entry.freshness(now) == Freshness::Fresh {
                return Some(entry);
            }
        }
        // Boxed: moka's lookup future is about 700 bytes, and held inline it
        // would be part of every request's future, which the server moves
        // (copies) for each request; most HITs never reach this line.
        let entry = Box::pin(self.entries.get(key)).await?;
        if entry.freshness(now) != Freshness::Fresh {
            return None;
        }
        self.hot.hold(key.owned(), &entry);
        Some(entry)
    }

    /// The entry for `key` (owned or borrowed) if it may still be served at `now`, fresh or stale.
    pub async fn get<Q>(&self, key: &Q, now: Instant) -> Option<Arc<CachedResponse>>
    where
        Q: Equivalent<CacheKey> + Hash + ?Sized,
    {
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
        let _no_purge_meanwhile = self.purge_gate.read().await;
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
        let _no_purge_meanwhile = self.purge_gate.read().await;
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
    /// Within one conversation only its own keys are looked at. Stores wait
    /// until it is done (reads do not).
    pub async fn purge_where(
        &self,
        scope: PurgeScope<'_>,
        drop: impl Fn(&CacheKey) -> bool,
    ) -> u64 {
        let _alone = self.purge_gate.write().await;
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
mod tests;
