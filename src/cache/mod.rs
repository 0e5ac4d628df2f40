//! The cache facade: look up a key, or run one shared fetch for it and store what may be stored.
//!
//! Split by topic: [`key`] (what tells answers apart), [`policy`] (pure
//! storing rules and lifetimes), [`entry`] (what a HIT is served from) and
//! its [`stored_body`] (held in allocations that fit),
//! [`coalescing`] (the table of fetches in flight, one per key), the fetch
//! procedure (store, stand in, drop; it takes any fetch yielding a
//! [`Fetched`] answer or a [`FetchError`]), [`status`] (how the outcome is
//! told to the client, with the [`seconds`] values a HIT writes), the moka-backed store with its index of each
//! conversation's keys and each thread's hot entries in front of it, the
//! [`record`] another process can read,
//! warm-restart [`snapshot`]s and the optional Redis [`shared`] tier. Time
//! is read from an injectable clock; the background work is handed to the
//! caller as [`CacheTasks`], never spawned here.

mod clock;
pub(crate) mod coalescing;
pub mod encoding;
pub mod entry;
mod fetch;
mod hot;
mod id_index;
pub mod key;
pub mod policy;
mod precompress;
mod record;
pub(crate) mod representation;
pub(crate) mod seconds;
pub(crate) mod shared;
mod snapshot;
pub(crate) mod status;
mod store;
pub mod stored_body;
mod tasks;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{CacheSettings, SharedSettings};
use crate::domain::ConversationId;
use crate::metrics::Metrics;
use crate::trace_context::TraceId;
use clock::Clock;
use coalescing::{FetchLost, InFlight, Role};
use encoding::Encoding;
use entry::CachedResponse;
use fetch::Fetcher;
use fetch::Purpose;
pub(crate) use fetch::{Failure, FetchError, FetchOutcome, Fetched};
use key::{CacheKey, KeyRef};
use policy::StorePolicy;
use precompress::Precompressor;
use shared::{Notice, SharedError, SharedTier, TierMetrics};
pub use snapshot::SnapshotError;
use store::{EvictionCause, PurgeScope, Store};
pub use tasks::{BackgroundTask, CacheTasks};

/// How much the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    /// Bytes by the weigher: bodies, kept headers and bookkeeping.
    pub bytes: u64,
}

/// The cache's rules that may change while running: what is stored, for how
/// long, when to refresh, which codings to offer.
#[derive(Debug, Clone)]
pub struct CacheRules {
    pub policy: Arc<StorePolicy>,
    /// Fraction of the fresh life, at its end, in which a HIT refreshes (0: off).
    pub refresh_ahead: f64,
    /// Content codings offered, in order (empty: off).
    pub encodings: Arc<[Encoding]>,
}

impl CacheRules {
    /// The rules the cache settings describe.
    pub fn from_settings(settings: &CacheSettings) -> CacheRules {
        CacheRules {
            policy: Arc::new(StorePolicy::from_settings(settings)),
            refresh_ahead: settings.refresh_ahead,
            encodings: settings.compression.clone().into(),
        }
    }

    /// Whether a HIT on `entry` at `now` should refresh it in the background.
    pub fn wants_refresh(&self, entry: &CachedResponse, now: Instant) -> bool {
        entry.wants_refresh(now, self.refresh_ahead)
    }
}

/// A HIT: the entry, and the instant the lookup found it fresh at. The
/// answer built from it (its `age`, its `ttl`, whether to refresh it) reads
/// that same instant, so they agree with the lookup and cost no clock read.
pub(crate) struct Found {
    pub(crate) entry: Arc<CachedResponse>,
    pub(crate) now: Instant,
}

/// What a purge dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Entries this replica held.
    pub local: u64,
    /// Values deleted from the shared tier (none without one), or why not.
    pub shared: Option<Result<u64, SharedError>>,
}

/// The trace of the request that starts a shared fetch (none when it came
/// without one): kept with the fetch while it runs and handed to every
/// request that joins it, which logs it. The cache reads nothing of it, and
/// neither keys nor stores it.
pub(crate) type StarterTrace = Option<TraceId>;

/// The in-memory cache and its fetches in flight; the rules come with each call.
pub struct Cache {
    fetcher: Fetcher,
    in_flight: Arc<InFlight<CacheKey, FetchOutcome, StarterTrace>>,
}

impl Cache {
    /// An empty cache with the configured bounds and rules, counting into
    /// `metrics`, behind which the `shared` tier is consulted when set; and
    /// the background work it needs, which the caller spawns (see
    /// [`CacheTasks`]): nothing is spawned here.
    pub(crate) fn new(
        settings: &CacheSettings,
        shared: Option<&SharedSettings>,
        metrics: Arc<Metrics>,
    ) -> (Cache, CacheTasks) {
        let mut tasks = CacheTasks::default();
        let on_evict = {
            let metrics = Arc::clone(&metrics);
            move |cause: EvictionCause| metrics.eviction(cause.as_str())
        };
        // Registered with or without a tier, so the series are always there.
        let tier_metrics = Arc::new(TierMetrics::register(&metrics));
        let store = Store::new(settings.max_bytes, on_evict);
        let shared = shared.and_then(|settings| {
            SharedTier::start(settings, Arc::clone(&tier_metrics), &mut tasks)
                .inspect_err(|_| {
                    tracing::error!(
                        target: "ayra_cache::shared",
                        "the shared tier could not start; caching alone"
                    );
                })
                .ok()
        });
        if let Some(tier) = &shared {
            // Subscribed now, so no purge published from here on is missed.
            tasks.add(
                "follow purges",
                follow_purges(store.clone(), tier.notices()),
            );
        }
        let cache = Cache {
            fetcher: Fetcher {
                store,
                metrics,
                precompressor: Arc::new(Precompressor::new()),
                shared,
                clock: Clock::default(),
            },
            in_flight: Arc::default(),
        };
        (cache, tasks)
    }

    /// Whether a shared tier is configured and its last operation reached it.
    pub(crate) fn shared_up(&self) -> Option<bool> {
        self.fetcher.shared.as_ref().map(|tier| tier.is_up())
    }

    /// The shared tier, when one is configured: the upstream budgets share
    /// their buckets through it too (`Budgets::sharing`).
    pub(crate) fn shared_tier(&self) -> Option<Arc<SharedTier>> {
        self.fetcher.shared.clone()
    }

    /// The fresh entry for `key`, if any (a stale one is not a HIT), with
    /// the instant it was found fresh at.
    pub(crate) async fn lookup(&self, key: &KeyRef<'_>) -> Option<Found> {
        let now = self.fetcher.clock.now();
        let entry = self.fetcher.store.get_fresh(key, now).await?;
        Some(Found { entry, now })
    }

    /// Runs `fetch` once for all concurrent callers with this key, in its own
    /// task: stores the answer when the policy allows, or lets a stale entry
    /// stand in when the upstream fails. A caller that joins a running fetch
    /// is told the trace of the request that started it.
    pub(crate) async fn fetch<F>(
        &self,
        key: CacheKey,
        starter: StarterTrace,
        fetch: F,
        rules: &CacheRules,
    ) -> Result<(FetchOutcome, Role<StarterTrace>), FetchLost>
    where
        F: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let fetcher = self.fetcher.clone();
        let rules = rules.clone();
        self.in_flight
            .run(key.clone(), starter, move || {
                fetcher.run(key, Purpose::Demand, fetch, rules)
            })
            .await
    }

    /// Compresses a HIT's entry in the background, once per entry, if it is
    /// not yet and a compression slot is free; called for HITs whose client
    /// accepts an offered coding (entries are compressed lazily, never on a
    /// miss's path).
    pub(crate) fn precompress(
        &self,
        key: &KeyRef<'_>,
        entry: &Arc<CachedResponse>,
        rules: &CacheRules,
    ) {
        if entry.compressible() && !entry.has_variants() && !rules.encodings.is_empty() {
            self.fetcher.precompressor.start(
                &self.fetcher.store,
                key.owned(),
                Arc::clone(entry),
                &rules.encodings,
            );
        }
    }

    /// Starts a background refresh of `key` unless a fetch for it is running;
    /// true when one started. `starter` is the trace of the request that
    /// found the entry due, told to requests that join the refresh.
    pub(crate) fn refresh<F>(
        &self,
        key: CacheKey,
        starter: StarterTrace,
        fetch: F,
        rules: &CacheRules,
    ) -> bool
    where
        F: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let fetcher = self.fetcher.clone();
        let rules = rules.clone();
        self.in_flight.start_if_idle(key.clone(), starter, move || {
            fetcher.run(key, Purpose::Refresh, fetch, rules)
        })
    }

    /// Drops every entry of conversation `id` (every flag variant, every
    /// credential) here and in the shared tier, and tells every replica to
    /// drop theirs.
    pub(crate) async fn purge_conversation(&self, id: &ConversationId) -> Purged {
        let local = purge_local(&self.fetcher.store, Some(id)).await;
        let shared = match &self.fetcher.shared {
            Some(tier) => Some(tier.purge_conversation(id).await),
            None => None,
        };
        Purged { local, shared }
    }

    /// Drops every entry, here, in the shared tier and on every replica.
    pub(crate) async fn purge_all(&self) -> Purged {
        let local = purge_local(&self.fetcher.store, None).await;
        let shared = match &self.fetcher.shared {
            Some(tier) => Some(tier.purge_all().await),
            None => None,
        };
        Purged { local, shared }
    }

    /// Writes every usable entry to `path`, giving up at `deadline`; returns
    /// how many were written.
    pub(crate) async fn save_snapshot(
        &self,
        path: &Path,
        deadline: Instant,
    ) -> Result<u64, SnapshotError> {
        let entries = self.fetcher.store.all();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || snapshot::write(&path, entries.into_iter(), deadline))
            .await
            .map_err(|_| SnapshotError::Damaged("the snapshot writer panicked"))?
    }

    /// Loads the snapshot at `path` and removes the file (a snapshot is used
    /// once). Returns (loaded, skipped as expired). On any error nothing is
    /// loaded.
    pub(crate) async fn load_snapshot(&self, path: &Path) -> Result<(u64, u64), SnapshotError> {
        let owned = path.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            let counts = snapshot::read(&owned, |key, entry| entries.push((key, entry)));
            counts.map(|counts| (counts, entries))
        })
        .await
        .map_err(|_| SnapshotError::Damaged("the snapshot reader panicked"))?;
        if !matches!(&read, Err(SnapshotError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound) {
            let _ = std::fs::remove_file(path);
        }
        let (counts, entries) = read?;
        let store = &self.fetcher.store;
        for (key, entry) in entries {
            let entry = Arc::new(entry);
            // Compressed lazily, by the first HIT that asks for a coding.
            store
                .insert_unless_superseded(key.clone(), entry, store.epoch(&key.id))
                .await;
        }
        Ok(counts)
    }

    /// Entries and bytes held, after moka's pending housekeeping has run.
    pub(crate) async fn usage(&self) -> Usage {
        let store = &self.fetcher.store;
        store.run_pending_tasks().await;
        Usage {
            entries: store.entry_count(),
            bytes: store.weighted_size(),
        }
    }
}

/// Drops this replica's entries of conversation `id`, or all; returns how many.
async fn purge_local(store: &Store, id: Option<&ConversationId>) -> u64 {
    match id {
        Some(id) => {
            store
                .purge_where(PurgeScope::Conversation(id), |key| key.id == *id)
                .await
        }
        None => store.purge_where(PurgeScope::All, |_| true).await,
    }
}

/// Drops local copies when any replica purges (this one included: a second
/// purge finds nothing).
async fn follow_purges(store: Store, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match notices.recv().await {
            Ok(Notice::Purge(id)) => {
                if let Ok(id) = ConversationId::parse(&id) {
                    purge_local(&store, Some(&id)).await;
                }
            }
            Ok(Notice::PurgeAll) => {
                purge_local(&store, None).await;
            }
            // Lagging needs 1024 notices queued behind a loop that does
            // nothing else; a purge lost that way is the gap docs/caching.md names.
            Ok(Notice::Stored(_) | Notice::Released(_) | Notice::BudgetPaused { .. })
            | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache_settings() -> CacheSettings {
        CacheSettings {
            max_bytes: 1 << 20,
            max_ttl: Duration::from_secs(60),
            expiry_margin: Duration::from_secs(1),
            statuses: vec!["completed".into()],
            stale_if_error: Duration::ZERO,
            refresh_ahead: 0.0,
            in_progress_ttl: Duration::ZERO,
            not_found_ttl: Duration::ZERO,
            snapshot_path: None,
            compression: Vec::new(),
        }
    }

    /// No runtime here: `tokio::spawn` would panic.
    #[test]
    fn the_constructor_spawns_nothing_and_hands_its_background_work_over() {
        let metrics = Arc::new(Metrics::new());
        let (_alone, tasks) = Cache::new(&cache_settings(), None, Arc::clone(&metrics));
        assert!(tasks.names().is_empty());
        for cluster in [false, true] {
            let shared = SharedSettings {
                redis_url: "redis://127.0.0.1:1/0".into(),
                cluster,
                key_prefix: "t:".into(),
                timeout: Duration::from_millis(100),
                lock_ttl: Duration::from_secs(1),
                encryption_key: None,
            };
            let (cache, tasks) = Cache::new(&cache_settings(), Some(&shared), Arc::clone(&metrics));
            assert_eq!(
                tasks.names(),
                [
                    "shared-tier connection",
                    "shared-tier notices",
                    "follow purges"
                ]
            );
            assert_eq!(cache.shared_up(), Some(true), "not yet known down");
        }
    }
}
