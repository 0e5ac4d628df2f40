//! The cache facade: look up a key, or run one shared fetch for it and store what may be stored.
//!
//! Split by topic: [`key`] (what tells answers apart), [`policy`] (pure
//! storing rules and lifetimes), [`entry`] (what a HIT is served from),
//! [`coalesce`] (one fetch per key), [`status`] (how the outcome is told to
//! the client) and the moka-backed store.

pub mod coalesce;
pub mod entry;
pub mod key;
pub mod policy;
pub mod status;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::config::CacheSettings;
use crate::error::UpstreamError;
use crate::metrics::Metrics;
use crate::route::ConversationId;
use crate::upstream::UpstreamResponse;
use coalesce::{FlightLost, Flights, Role};
use entry::CachedResponse;
use key::CacheKey;
use policy::{Answer, NoStoreReason, StorePolicy};
use store::Store;

/// What one shared fetch produced, handed to every request that joined it.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The entry was stored by a fetch that ended just before this one began.
    Cached(Arc<CachedResponse>),
    /// The upstream answered, whatever the status.
    Answered {
        response: Arc<UpstreamResponse>,
        /// The stored entry, or why nothing was stored.
        stored: Result<Arc<CachedResponse>, NoStoreReason>,
    },
    /// The exchange failed.
    Failed(UpstreamError),
}

/// How much the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    /// Bytes by the weigher: bodies, kept headers and bookkeeping.
    pub bytes: u64,
}

/// The in-memory cache with its storing policy and its flights.
pub struct Cache {
    store: Store,
    policy: Arc<StorePolicy>,
    flights: Arc<Flights<CacheKey, FetchOutcome>>,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// An empty cache with the configured bounds and rules, counting into `metrics`.
    pub fn new(settings: &CacheSettings, metrics: Arc<Metrics>) -> Cache {
        let on_evict = {
            let metrics = Arc::clone(&metrics);
            move |cause| metrics.eviction(cause)
        };
        Cache {
            store: Store::new(settings.max_bytes, settings.max_ttl, on_evict),
            policy: Arc::new(StorePolicy::from_settings(settings)),
            flights: Arc::default(),
            metrics,
        }
    }

    /// The fresh entry for `key`, if any.
    pub async fn lookup(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.store.get(key, Instant::now()).await
    }

    /// Runs `fetch` once for all concurrent callers with this key, in its own
    /// task, and stores the answer when the policy allows.
    pub async fn fetch<F>(
        &self,
        key: CacheKey,
        fetch: impl FnOnce() -> F,
    ) -> Result<(FetchOutcome, Role), FlightLost>
    where
        F: Future<Output = Result<UpstreamResponse, UpstreamError>> + Send + 'static,
    {
        let store = self.store.clone();
        let policy = Arc::clone(&self.policy);
        let metrics = Arc::clone(&self.metrics);
        self.flights
            .run(key.clone(), move || {
                let exchange = fetch();
                async move {
                    // A fetch for this key may have stored it between our
                    // lookup and this flight's start.
                    if let Some(entry) = store.get(&key, Instant::now()).await {
                        return FetchOutcome::Cached(entry);
                    }
                    match exchange.await {
                        Err(error) => FetchOutcome::Failed(error),
                        Ok(response) => {
                            let outcome = store_if_allowed(&store, &policy, key, response).await;
                            if let FetchOutcome::Answered { stored, .. } = &outcome {
                                metrics.store_decision(stored.as_ref().err().copied());
                            }
                            outcome
                        }
                    }
                }
            })
            .await
    }

    /// Drops every entry of conversation `id` (every flag variant, every
    /// credential); returns how many.
    pub async fn purge_conversation(&self, id: &ConversationId) -> u64 {
        self.store.purge_where(|key| key.id == *id).await
    }

    /// Drops every entry; returns how many.
    pub async fn purge_all(&self) -> u64 {
        self.store.purge_where(|_| true).await
    }

    /// Entries and bytes held, after moka's pending housekeeping has run.
    pub async fn usage(&self) -> Usage {
        self.store.run_pending_tasks().await;
        Usage {
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
        }
    }
}

async fn store_if_allowed(
    store: &Store,
    policy: &StorePolicy,
    key: CacheKey,
    response: UpstreamResponse,
) -> FetchOutcome {
    let decision = policy.decide(&Answer {
        status: response.status,
        headers: &response.headers,
        body: &response.body,
        flags: key.flags,
        received: response.received_at,
    });
    let stored = match decision {
        Ok(lifetime) => {
            let entry = Arc::new(CachedResponse::new(
                &response.headers,
                response.body.clone(),
                response.received_instant,
                lifetime,
            ));
            store.insert(key, Arc::clone(&entry)).await;
            Ok(entry)
        }
        Err(reason) => Err(reason),
    };
    FetchOutcome::Answered {
        response: Arc::new(response),
        stored,
    }
}
