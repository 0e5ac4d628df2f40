//! The fetch procedure: re-check the store, call upstream, then store, stand in with a stale entry, or drop.
//!
//! The cache owns this boundary: it takes a fetch (any future yielding a
//! [`Fetched`] answer or a [`FetchError`]) and knows nothing of the client
//! that makes it; the cached route adapts the client's types to these.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::clock::Clock;
use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::policy::{Answer, EntryKind, NoStoreReason};
use super::precompress::Precompressor;
use super::shared::{Claim, ClaimGuard, SharedTier};
use super::store::{Epoch, EvictionCause, Inserted, PurgeScope, Store};
use super::CacheRules;
use crate::metrics::Metrics;

/// A whole answer a fetch got, as the cache takes it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    /// The answer's headers, hop-by-hop ones already removed.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Local wall-clock time the answer was read whole.
    pub received_at: SystemTime,
    /// The same moment on the monotonic clock.
    pub received_instant: Instant,
    /// Time the exchange took (passed back untouched, for the access log).
    pub elapsed: Duration,
}

/// Why a fetch got no whole answer; the cache passes it back untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// The origin could not be reached.
    Unavailable,
    /// No whole answer arrived in time.
    Timeout,
    /// The answer was larger than allowed.
    TooLarge,
    /// The answer could not be read whole.
    BadResponse,
    /// The call never went out: the upstream budget gave it no turn. For a
    /// client, whole seconds until one could come (its `retry-after`); a
    /// skipped refresh's is never shown. Stale may stand in; nothing is stored.
    NoTurn { retry_after_secs: u64 },
}

/// What one shared fetch produced, handed to every request that joined it.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// A fresh entry was stored by a fetch that ended just before this one began.
    Cached(Arc<CachedResponse>),
    /// The shared tier held a fresh entry (stored by another replica, or
    /// fetched by one this fetch waited for); it is now held locally too.
    Shared(Arc<CachedResponse>),
    /// The upstream answered, whatever the status.
    Answered {
        response: Arc<Fetched>,
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
    Failed(FetchError),
}

/// How the upstream failed a revalidation.
#[derive(Debug, Clone)]
pub enum Failure {
    /// It answered 5xx or 429.
    Answered(Arc<Fetched>),
    /// It could not be reached or read.
    Error(FetchError),
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

/// How a background refresh ended: the `result` label of its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshResult {
    /// Its answer replaced the entry.
    Stored,
    /// Its answer was not storable: the entry lives out its times.
    NotStored,
    /// The upstream failed.
    Failed,
    /// The upstream budget had no token to spare: the entry lives out its times.
    Skipped,
}

impl RefreshResult {
    fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Stored => "stored",
            RefreshResult::NotStored => "not_stored",
            RefreshResult::Failed => "error",
            RefreshResult::Skipped => "skipped",
        }
    }
}

/// The parts of the cache a fetch works with.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub precompressor: Arc<Precompressor>,
    /// The Redis tier replicas share; none: this proxy caches alone.
    pub shared: Option<Arc<SharedTier>>,
    /// What "now" is for every freshness decision of a fetch.
    pub clock: Clock,
}

/// What the shared tier said about a key this replica misses.
enum Consulted {
    /// It held a fresh entry, now stored locally too.
    Adopted(Arc<CachedResponse>),
    /// This replica fetches for every replica (boxed: a fetch without a
    /// shared tier should not carry its room).
    Claimed(Box<ClaimGuard>),
    /// Fetch as if alone: Redis did not answer, or the replica that held
    /// the claim let go of it without a value.
    Alone,
}

impl Fetcher {
    /// Runs one fetch for `key` to its end.
    pub async fn run<F>(
        self,
        key: CacheKey,
        purpose: Purpose,
        fetch: F,
        rules: CacheRules,
    ) -> FetchOutcome
    where
        F: Future<Output = Result<Fetched, FetchError>>,
    {
        let mut epoch = self.store.epoch(&key.id);
        let stale = match self.recheck(&key, purpose).await {
            Ok(fresh) => return FetchOutcome::Cached(fresh),
            Err(held) => held,
        };
        let mut claim = None;
        if let Some(shared) = &self.shared {
            // Boxed: the wait is a large future, and a fetch without a
            // shared tier should not carry its room.
            match Box::pin(self.consult(shared, &key, purpose, &rules, epoch)).await {
                Consulted::Adopted(entry) => return FetchOutcome::Shared(entry),
                Consulted::Claimed(guard) => claim = Some(guard),
                Consulted::Alone => {}
            }
        }
        let result = fetch.await;
        let now = self.clock.now();
        if let Some(entry) = stale
            .as_ref()
            .filter(|entry| stands_in(entry, &result, now))
        {
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
                    let result = match error {
                        FetchError::NoTurn { .. } => RefreshResult::Skipped,
                        _ => RefreshResult::Failed,
                    };
                    self.metrics.refresh(result.as_str());
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
            .store_if_allowed(key, &response, purpose, epoch, &rules, claim)
            .await;
        if purpose == Purpose::Refresh {
            let result = match stored {
                Ok(_) => RefreshResult::Stored,
                Err(_) => RefreshResult::NotStored,
            };
            self.metrics.refresh(result.as_str());
        }
        FetchOutcome::Answered {
            response: Arc::new(response),
            stored,
            revalidated: stale.is_some(),
        }
    }

    /// A demand fetch looks again: a fetch for this key may have stored it
    /// between the caller's lookup and now (`Ok`). Otherwise, the stale
    /// entry held, if any (`Err`).
    async fn recheck(
        &self,
        key: &CacheKey,
        purpose: Purpose,
    ) -> Result<Arc<CachedResponse>, Option<Arc<CachedResponse>>> {
        if purpose == Purpose::Refresh {
            return Err(None);
        }
        let now = self.clock.now();
        match self.store.get(key, now).await {
            Some(entry) if entry.freshness(now) == Freshness::Fresh => Ok(entry),
            held => Err(held),
        }
    }

    /// Looks for `key` in the shared tier, then claims its fetch or waits for
    /// the replica that holds the claim. A refresh takes only an entry that
    /// is not itself due for refresh (a newer one than it holds).
    async fn consult(
        &self,
        shared: &Arc<SharedTier>,
        key: &CacheKey,
        purpose: Purpose,
        rules: &CacheRules,
        epoch: Epoch,
    ) -> Consulted {
        let servable = |entry: &CachedResponse| {
            purpose == Purpose::Demand || !rules.wants_refresh(entry, self.clock.now())
        };
        if let Some(entry) = shared.get(key).await.filter(|entry| servable(entry)) {
            return self.adopt(key, entry, epoch).await;
        }
        match shared.claim(key).await {
            Claim::Held(guard) => Consulted::Claimed(Box::new(guard)),
            Claim::Unavailable => Consulted::Alone,
            Claim::Taken => match shared.wait(key, servable).await {
                Some(entry) => self.adopt(key, entry, epoch).await,
                None => Consulted::Alone,
            },
        }
    }

    /// Holds a shared entry locally, with the instants it was stored with;
    /// one purged meanwhile is not served.
    async fn adopt(&self, key: &CacheKey, entry: CachedResponse, epoch: Epoch) -> Consulted {
        let entry = Arc::new(entry);
        let inserted = self
            .store
            .insert_unless_superseded(key.clone(), Arc::clone(&entry), epoch)
            .await;
        match inserted {
            Inserted::Refused => return Consulted::Alone,
            Inserted::Replaced => self.metrics.eviction(EvictionCause::Replaced.as_str()),
            Inserted::New => {}
        }
        // Compressed lazily, by the first HIT that asks for a coding.
        Consulted::Adopted(entry)
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
        response: &Fetched,
        purpose: Purpose,
        epoch: Epoch,
        rules: &CacheRules,
        claim: Option<Box<ClaimGuard>>,
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
                self.metrics.store_refused(reason.as_str());
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
                self.metrics
                    .store_refused(NoStoreReason::Superseded.as_str());
                return Err(NoStoreReason::Superseded);
            }
            Inserted::Replaced => self.metrics.eviction(EvictionCause::Replaced.as_str()),
            Inserted::New => {}
        }
        self.metrics.stored();
        if let Some(shared) = &self.shared {
            shared.put(key, Arc::clone(&entry), claim.map(|claim| *claim));
        }
        // Compressed lazily, by the first HIT that asks for a coding.
        Ok(entry)
    }
}

/// The stale entry stands in when the upstream failed, answered 5xx or 429,
/// and the entry is still usable (never at or past its URL deadline).
fn stands_in(entry: &CachedResponse, result: &Result<Fetched, FetchError>, now: Instant) -> bool {
    let failed = match result {
        Err(_) => true,
        Ok(response) => is_failure(response.status),
    };
    failed && entry.freshness(now) != Freshness::Dead
}

fn is_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests;
