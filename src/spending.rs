//! Spending the upstream budget (SPEC section 12): an upstream call's turn before it goes out, and the pause the upstream's `429` starts.
//!
//! Every upstream call goes through a [`Spender`]: a client's call (a
//! cached-route fetch, a pass-through request) waits for its turn up to
//! `max_wait`; a background refresh takes only a token nobody waits for.
//! When the answer is a `429`, its credential is paused for the
//! `retry-after` it names. HITs never get here.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::auth::Credential;
use crate::budget::{
    pause_length, Admission, Budgets, ClientIdentity, RefreshAdmission, UpstreamCredential,
};

/// Who a call is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallFor {
    /// A client waits for its answer: the call waits for its turn
    /// ([`Spender::client_turn`]).
    Client,
    /// A background refresh: goes only on a token no client waits for
    /// ([`Spender::refresh_turn`]).
    Refresh,
}

/// A client's call that got no turn within `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Whole seconds until a turn could come, at least 1.
    pub retry_after_secs: u64,
}

/// What a call's turn came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turn {
    /// How long it waited for it, granted or not.
    pub waited: Duration,
    /// Whether it may go.
    pub go: Result<(), Refused>,
}

impl Turn {
    /// The wait, when there was one (the access event's `budget_wait_ms`).
    pub(crate) fn wait(&self) -> Option<Duration> {
        Some(self.waited).filter(|waited| !waited.is_zero())
    }
}

/// Where a call that runs in a task of its own (a shared fetch) notes how
/// long it waited for its turn, read by the request it was made for.
pub(crate) type WaitNote = Arc<OnceLock<Duration>>;

/// One upstream call's claim on its credential's budget.
#[derive(Debug, Clone)]
pub(crate) struct Spender {
    budgets: Arc<Budgets>,
    credential: UpstreamCredential,
    who: ClientIdentity,
}

impl Spender {
    pub(crate) fn new(
        budgets: &Arc<Budgets>,
        credential: UpstreamCredential,
        who: ClientIdentity,
    ) -> Spender {
        Spender {
            budgets: Arc::clone(budgets),
            credential,
            who,
        }
    }

    /// A call made for a request with `credential`: it spends the quota of
    /// the key it sends, and takes the turn of the client's own token.
    pub(crate) fn for_request(budgets: &Arc<Budgets>, credential: &Credential) -> Spender {
        let upstream = credential
            .upstream_fingerprint()
            .map_or(UpstreamCredential::Anonymous, UpstreamCredential::Key);
        let who = credential
            .client_fingerprint()
            .map_or(ClientIdentity::Anonymous, ClientIdentity::Token);
        Spender::new(budgets, upstream, who)
    }

    /// Waits for a client's call's turn: how long it waited, and whether it may go.
    pub(crate) async fn client_turn(&self) -> Turn {
        let admission = self.budgets.admit(self.credential, self.who).await;
        let go = match admission {
            Admission::Granted { .. } => Ok(()),
            Admission::Refused {
                retry_after_secs, ..
            } => Err(Refused { retry_after_secs }),
        };
        Turn {
            waited: admission.waited(),
            go,
        }
    }

    /// May a background refresh go now, on a token no client waits for? Never waits.
    pub(crate) fn refresh_turn(&self) -> RefreshAdmission {
        self.budgets.try_refresh(self.credential)
    }

    /// The upstream answered `status`: a `429` pauses the credential for
    /// the `retry-after` it names (read against `now`).
    pub(crate) fn answered(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) {
        if status == StatusCode::TOO_MANY_REQUESTS {
            let pause = pause_length(headers, now);
            tracing::warn!(
                credential = %self.credential.label(),
                pause_ms = pause.as_millis() as u64,
                "the upstream answered 429: calls on this credential pause"
            );
            self.budgets.pause(self.credential, pause);
        }
    }
}

/// The wait a note holds, when the call waited at all.
pub(crate) fn waited(note: &WaitNote) -> Option<Duration> {
    note.get().copied().filter(|waited| !waited.is_zero())
}

/// Drops the budgets nobody uses every `every`, until `stop` changes.
pub(crate) async fn sweep_budgets(
    budgets: Arc<Budgets>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let dropped = budgets.sweep();
        tracing::debug!(dropped, held = budgets.len(), "budgets swept");
    }
}

#[cfg(test)]
mod tests;
