//! The cache facade: look up a key, or run one shared fetch for it and store what may be stored.
//!
//! Split by topic: [`key`] (what tells answers apart), [`policy`] (pure
//! storing rules and lifetimes), [`entry`] (what a HIT is served from),
//! [`coalesce`] (one fetch per key), [`status`] (how the outcome is told to
//! the client) and the moka-backed store.

pub mod coalesce;
pub mod encoding;
pub mod entry;
mod flight;
pub mod key;
pub mod policy;
mod precompress;
pub mod representation;
mod snapshot;
pub mod status;
mod store;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::CacheSettings;
use crate::error::UpstreamError;
use crate::metrics::Metrics;
use crate::route::ConversationId;
use crate::upstream::UpstreamResponse;
use coalesce::{FlightLost, Flights, Role};
use encoding::Encoding;
use entry::{CachedResponse, Freshness};
use flight::FlightCrew;
pub use flight::{Failure, FetchOutcome, Purpose};
use key::CacheKey;
use policy::StorePolicy;
use precompress::Precompressor;
pub use snapshot::SnapshotError;
use store::{PurgeScope, Store};

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

/// moka's own cap on any entry's life, fixed at start: the longest fresh plus
/// stale life the settings allow. Each entry's own instants end it earlier.
pub fn lifetime_cap(settings: &CacheSettings) -> Duration {
    settings
        .max_ttl
        .saturating_add(settings.stale_if_error)
        .max(settings.in_progress_ttl)
        .max(settings.not_found_ttl)
}

/// The in-memory cache and its flights; the rules come with each call.
pub struct Cache {
    crew: FlightCrew,
    flights: Arc<Flights<CacheKey, FetchOutcome>>,
}

impl Cache {
    /// An empty cache with the configured bounds and rules, counting into `metrics`.
    pub fn new(settings: &CacheSettings, metrics: Arc<Metrics>) -> Cache {
        let on_evict = {
            let metrics = Arc::clone(&metrics);
            move |cause| metrics.eviction(cause)
        };
        Cache {
            crew: FlightCrew {
                store: Store::new(settings.max_bytes, lifetime_cap(settings), on_evict),
                metrics,
                precompressor: Arc::new(Precompressor::new()),
            },
            flights: Arc::default(),
        }
    }

    /// The fresh entry for `key`, if any (a stale one is not a HIT).
    pub async fn lookup(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let now = Instant::now();
        self.crew
            .store
            .get(key, now)
            .await
            .filter(|entry| entry.freshness(now) == Freshness::Fresh)
    }

    /// Runs `fetch` once for all concurrent callers with this key, in its own
    /// task: stores the answer when the policy allows, or lets a stale entry
    /// stand in when the upstream fails.
    pub async fn fetch<F>(
        &self,
        key: CacheKey,
        exchange: F,
        rules: &CacheRules,
    ) -> Result<(FetchOutcome, Role), FlightLost>
    where
        F: Future<Output = Result<UpstreamResponse, UpstreamError>> + Send + 'static,
    {
        let crew = self.crew.clone();
        let rules = rules.clone();
        self.flights
            .run(key.clone(), move || {
                crew.fly(key, Purpose::Demand, exchange, rules)
            })
            .await
    }

    /// Compresses a HIT's entry in the background if it is not yet and a
    /// compression slot is free (stores that outpaced compression left it).
    pub fn precompress(&self, key: &CacheKey, entry: &Arc<CachedResponse>, rules: &CacheRules) {
        if entry.compressible() && !entry.has_variants() && !rules.encodings.is_empty() {
            self.crew.precompressor.start(
                &self.crew.store,
                key.clone(),
                Arc::clone(entry),
                &rules.encodings,
            );
        }
    }

    /// Starts a background refresh of `key` unless a fetch for it is running;
    /// true when one started.
    pub fn refresh<F>(&self, key: CacheKey, exchange: F, rules: &CacheRules) -> bool
    where
        F: Future<Output = Result<UpstreamResponse, UpstreamError>> + Send + 'static,
    {
        let crew = self.crew.clone();
        let rules = rules.clone();
        self.flights.start_if_idle(key.clone(), move || {
            crew.fly(key, Purpose::Refresh, exchange, rules)
        })
    }

    /// Drops every entry of conversation `id` (every flag variant, every
    /// credential); returns how many.
    pub async fn purge_conversation(&self, id: &ConversationId) -> u64 {
        self.crew
            .store
            .purge_where(PurgeScope::Conversation(id), |key| key.id == *id)
            .await
    }

    /// Drops every entry; returns how many.
    pub async fn purge_all(&self) -> u64 {
        self.crew.store.purge_where(PurgeScope::All, |_| true).await
    }

    /// Writes every usable entry to `path`, giving up at `deadline`; returns
    /// how many were written.
    pub async fn save_snapshot(
        &self,
        path: &Path,
        deadline: Instant,
    ) -> Result<u64, SnapshotError> {
        let entries = self.crew.store.all();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || snapshot::write(&path, entries.into_iter(), deadline))
            .await
            .map_err(|_| SnapshotError::Damaged("the snapshot writer panicked"))?
    }

    /// Loads the snapshot at `path` and removes the file (a snapshot is used
    /// once). Returns (loaded, skipped as expired). On any error nothing is
    /// loaded.
    pub async fn load_snapshot(
        &self,
        path: &Path,
        rules: &CacheRules,
    ) -> Result<(u64, u64), SnapshotError> {
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
        let store = &self.crew.store;
        for (key, entry) in entries {
            let entry = Arc::new(entry);
            store
                .insert_unless_superseded(key.clone(), Arc::clone(&entry), store.epoch(&key.id))
                .await;
            self.crew
                .precompressor
                .start(store, key, entry, &rules.encodings);
        }
        Ok(counts)
    }

    /// Entries and bytes held, after moka's pending housekeeping has run.
    pub async fn usage(&self) -> Usage {
        let store = &self.crew.store;
        store.run_pending_tasks().await;
        Usage {
            entries: store.entry_count(),
            bytes: store.weighted_size(),
        }
    }
}
