//! The cached route's upstream call, as the cache takes it: its turn in the budget, the exchange, the pause a `429` starts.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::Credential;
use crate::budget::{Budgets, RefreshAdmission};
use crate::cache::key::CacheKey;
use crate::cache::{FetchError, Fetched};
use crate::live::Live;
use crate::spending::{CallFor, Spender, WaitNote};
use crate::trace_context::UpstreamIds;
use crate::upstream::{Upstream, UpstreamError, UpstreamResponse};

/// What an upstream call for the cached route works with.
pub(crate) struct CallParts<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub budgets: &'a Arc<Budgets>,
    pub live: &'a Live,
}

/// The upstream call for `key` (lazy: nothing happens until it is polled,
/// so a request that joins another's flight spends nothing), holding the
/// credential only until it is made, carrying the `ids` of the request it
/// is made for. Right before it goes out it takes its turn in the budget
/// (a client's wait noted in `note`); a `429` pauses its credential.
pub(crate) fn upstream_fetch(
    parts: CallParts<'_>,
    key: &CacheKey,
    credential: &Credential,
    ids: UpstreamIds,
    call: CallFor,
    note: Option<WaitNote>,
) -> impl Future<Output = Result<Fetched, FetchError>> + Send + 'static {
    let upstream = Arc::clone(parts.upstream);
    let spender = Spender::for_request(parts.budgets, credential);
    let (id, flags) = (key.id.clone(), key.flags);
    let authorization = credential.upstream.clone();
    let timeout = parts.live.upstream_timeout;
    async move {
        match call {
            CallFor::Client => {
                let turn = spender.client_turn().await;
                if let Some(note) = note {
                    let _ = note.set(turn.waited);
                }
                turn.go.map_err(|refused| FetchError::NoTurn {
                    retry_after_secs: refused.retry_after_secs,
                })?;
            }
            CallFor::Refresh => {
                if spender.refresh_turn() == RefreshAdmission::Skipped {
                    // Never shown: a skipped refresh answers no one.
                    return Err(FetchError::NoTurn {
                        retry_after_secs: 1,
                    });
                }
            }
        }
        let response = upstream
            .get_conversation(&id, flags, authorization.as_ref(), &ids, timeout)
            .await
            .map_err(fetch_error)?;
        spender.answered(response.status, &response.headers, SystemTime::now());
        Ok(fetched(response))
    }
}

/// The client's answer as the cache takes it (moved, not copied).
fn fetched(response: UpstreamResponse) -> Fetched {
    Fetched {
        status: response.status,
        headers: response.headers,
        body: response.body,
        received_at: response.received_at,
        received_instant: response.received_instant,
        elapsed: response.elapsed,
    }
}

fn fetch_error(error: UpstreamError) -> FetchError {
    match error {
        UpstreamError::Unavailable => FetchError::Unavailable,
        UpstreamError::Timeout => FetchError::Timeout,
        UpstreamError::TooLarge => FetchError::TooLarge,
        UpstreamError::BadResponse => FetchError::BadResponse,
    }
}
