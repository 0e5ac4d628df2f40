//! What one shared fetch does: re-check the store, call upstream, then store, stand in with a stale entry, or drop.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::policy::{Answer, EntryKind, NoStoreReason};
use super::precompress::Precompressor;
use super::store::{Epoch, Inserted, PurgeScope, Store};
use super::CacheRules;
use crate::error::UpstreamError;
use crate::metrics::{EvictionCause, Metrics};
use crate::upstream::UpstreamResponse;

/// What one shared fetch produced, handed to every request that joined it.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// A fresh entry was stored by a fetch that ended just before this one began.
    Cached(Arc<CachedResponse>),
    /// The upstream answered, whatever the status.
    Answered {
        response: Arc<UpstreamResponse>,
        /// The stored entry, or why nothing was stored.
        stored: Result<Arc<CachedResponse>, NoStoreReason>,
        /// A stale entry was held and this answer revalidated it (`fwd=stale`).
        revalidated: bool,
    },
    /// The upstream failed and a stale entry stands in for it.
    Stale {
        entry: Arc<CachedResponse>,
        /// What the upstream did, passed on if the entry dies before it is served.
        failure: Failure,
    },
    /// The exchange failed and nothing could stand in.
    Failed(UpstreamError),
}

/// How the upstream failed a revalidation.
#[derive(Debug, Clone)]
pub enum Failure {
    /// It answered 5xx or 429.
    Answered(Arc<UpstreamResponse>),
    /// It could not be reached or read.
    Error(UpstreamError),
}

impl Failure {
    /// The upstream's status, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Answered(response) => Some(response.status),
            Failure::Error(_) => None,
        }
    }
}

/// Why a fetch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A request found no fresh entry.
    Demand,
    /// A HIT found its entry near the end of its fresh life.
    Refresh,
}

/// The parts of the cache a fetch works with.
#[derive(Clone)]
pub(super) struct FlightCrew {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub precompressor: Arc<Precompressor>,
}

impl FlightCrew {
    /// Runs one fetch for `key` to its end.
    pub async fn fly<F>(
        self,
        key: CacheKey,
        purpose: Purpose,
        exchange: F,
        rules: CacheRules,
    ) -> FetchOutcome
    where
        F: Future<Output = Result<UpstreamResponse, UpstreamError>>,
    {
        let mut epoch = self.store.epoch(&key.id);
        let stale = match purpose {
            Purpose::Refresh => None,
            Purpose::Demand => match self.store.get(&key, Instant::now()).await {
                // A fetch for this key stored it between our lookup and now.
                Some(entry) if entry.freshness(Instant::now()) == Freshness::Fresh => {
                    return FetchOutcome::Cached(entry);
                }
                held => held,
            },
        };
        let result = exchange.await;
        if let Some(entry) = stale.as_ref().filter(|entry| stands_in(entry, &result)) {
            let failure = match result {
                Ok(response) => Failure::Answered(Arc::new(response)),
                Err(error) => Failure::Error(error),
            };
            return FetchOutcome::Stale {
                entry: Arc::clone(entry),
                failure,
            };
        }
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if purpose == Purpose::Refresh {
                    self.metrics.refresh_failed();
                }
                return FetchOutcome::Failed(error);
            }
        };
        if stale.is_some() {
            self.drop_refused(&key, response.status).await;
            // Our own drop is not a purge this answer must yield to.
            epoch = self.store.epoch(&key.id);
        }
        let stored = self
            .store_if_allowed(key, &response, purpose, epoch, &rules)
            .await;
        if purpose == Purpose::Refresh {
            self.metrics.refresh(stored.is_ok());
        }
        FetchOutcome::Answered {
            response: Arc::new(response),
            stored,
            revalidated: stale.is_some(),
        }
    }

    /// A 404 drops every entry of that credential and id; a 403 drops this one.
    async fn drop_refused(&self, key: &CacheKey, status: StatusCode) {
        if status == StatusCode::NOT_FOUND {
            let (partition, id) = (key.partition, key.id.clone());
            self.store
                .purge_where(PurgeScope::Conversation(&key.id), |held| {
                    held.partition == partition && held.id == id
                })
                .await;
        } else if status == StatusCode::FORBIDDEN {
            self.store.remove(key).await;
        }
    }

    /// Stores a storable answer; a refresh only ever replaces its entry with
    /// another complete answer, anything else leaves it to live out its times.
    async fn store_if_allowed(
        &self,
        key: CacheKey,
        response: &UpstreamResponse,
        purpose: Purpose,
        epoch: Epoch,
        rules: &CacheRules,
    ) -> Result<Arc<CachedResponse>, NoStoreReason> {
        let decision = rules.policy.decide(&Answer {
            status: response.status,
            headers: &response.headers,
            body: &response.body,
            flags: key.flags,
            received: response.received_at,
        });
        let decision = match decision {
            Ok(lifetime) if purpose == Purpose::Refresh && lifetime.kind != EntryKind::Complete => {
                Err(NoStoreReason::InProgress)
            }
            other => other,
        };
        let lifetime = match decision {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                self.metrics.store_decision(Some(reason));
                return Err(reason);
            }
        };
        let entry = Arc::new(CachedResponse::new(
            response.status,
            &response.headers,
            response.body.clone(),
            response.received_instant,
            lifetime,
        ));
        let inserted = self
            .store
            .insert_unless_superseded(key.clone(), Arc::clone(&entry), epoch)
            .await;
        match inserted {
            Inserted::Refused => {
                self.metrics.store_decision(Some(NoStoreReason::Superseded));
                return Err(NoStoreReason::Superseded);
            }
            Inserted::Replaced => self.metrics.eviction(EvictionCause::Replaced),
            Inserted::New => {}
        }
        self.metrics.store_decision(None);
        // Compressed lazily, by the first HIT that asks for a coding.
        Ok(entry)
    }
}

/// The stale entry stands in when the upstream failed, answered 5xx or 429,
/// and the entry is still usable (never at or past its URL deadline).
fn stands_in(entry: &CachedResponse, result: &Result<UpstreamResponse, UpstreamError>) -> bool {
    let failed = match result {
        Err(_) => true,
        Ok(response) => is_failure(response.status),
    };
    failed && entry.freshness(Instant::now()) != Freshness::Dead
}

fn is_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}
