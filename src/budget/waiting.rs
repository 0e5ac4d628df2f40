//! One upstream credential's budget, shared by its calls: the waiting for a turn, and the driver that hands tokens out as they come.
//!
//! A call that finds a token and nobody waiting is answered under one short
//! lock, without allocating. Otherwise it queues (a one-shot channel) and
//! waits up to its deadline. While calls wait, one driver task per budget
//! sleeps until the next token (or the end of a pause) and hands it to the
//! call whose turn it is; it stops when nobody waits. Shared across
//! replicas, the driver also leases tokens from Redis (one round trip at a
//! time, never under the lock), so there a call that finds no leased token
//! waits for one round trip. A waiting call that
//! is dropped (its client went away) takes itself out of the queue, and a
//! token already sent to it goes to the next in turn or back to the bucket.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::config::BudgetSettings;

use super::decision::{Admission, RefreshAdmission};
use super::ledger::{Arrival, DriverStep, Ledger, LedgerView, Withdrawal};
use super::metrics::BudgetMetrics;
use super::shared::SharedBudget;
use super::turns::ClientIdentity;
use super::{now, UpstreamCredential};
use crate::cache::shared::SharedError;

/// The budget of one upstream credential.
#[derive(Debug)]
pub struct Budget {
    credential: UpstreamCredential,
    ledger: Mutex<Ledger>,
    /// Wakes the driver early: a reload or a pause moved its next step.
    driver_wake: Notify,
    metrics: Arc<BudgetMetrics>,
    /// With `[shared]`: where the driver leases tokens and pauses are told.
    shared: Option<SharedBudget>,
}

impl Budget {
    pub(super) fn new(
        credential: UpstreamCredential,
        settings: &BudgetSettings,
        metrics: Arc<BudgetMetrics>,
        now: Instant,
    ) -> Budget {
        Budget {
            credential,
            ledger: Mutex::new(Ledger::new(settings, now)),
            driver_wake: Notify::new(),
            metrics,
            shared: None,
        }
    }

    /// A budget whose tokens are also leased from the bucket `shared`
    /// holds for every replica, and whose pauses it tells them.
    pub(super) fn sharing(
        credential: UpstreamCredential,
        settings: &BudgetSettings,
        metrics: Arc<BudgetMetrics>,
        shared: SharedBudget,
        now: Instant,
    ) -> Budget {
        Budget {
            ledger: Mutex::new(Ledger::sharing(settings, shared.round_trip(), now)),
            shared: Some(shared),
            ..Budget::new(credential, settings, metrics, now)
        }
    }

    pub fn credential(&self) -> UpstreamCredential {
        self.credential
    }

    /// The ledger; a panic elsewhere while it was held left it consistent
    /// (every step is one short, non-panicking update), so keep using it.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the turn of a call of `who`, at most `max_wait`.
    pub async fn admit(self: &Arc<Self>, who: ClientIdentity) -> Admission {
        let start = now();
        let place = match self.ledger().arrive(who, start) {
            Arrival::Granted => {
                return Admission::Granted {
                    waited: Duration::ZERO,
                }
            }
            Arrival::Refused {
                reason,
                retry_after_secs,
            } => {
                return Admission::Refused {
                    retry_after_secs,
                    reason,
                    waited: Duration::ZERO,
                }
            }
            Arrival::Queued(place) => place,
        };
        if place.start_driver {
            tokio::spawn(drive(Arc::clone(self)));
        }
        let mut ticket = Ticket {
            budget: self,
            who,
            ticket: place.ticket,
            receiver: place.receiver,
            settled: false,
        };
        let deadline = tokio::time::Instant::from_std(place.deadline);
        let granted = matches!(
            tokio::time::timeout_at(deadline, &mut ticket.receiver).await,
            Ok(Ok(()))
        );
        let admission = if granted {
            ticket.settled = true;
            Admission::Granted {
                waited: now().saturating_duration_since(start),
            }
        } else {
            ticket.give_up(start)
        };
        self.metrics.waited(admission.waited());
        admission
    }

    /// A background refresh: a token no client waits for, or skipped; never waits.
    pub fn try_refresh(self: &Arc<Self>) -> RefreshAdmission {
        let now = now();
        let (admission, start_driver) = {
            let mut ledger = self.ledger();
            (ledger.try_refresh(now), ledger.start_driver(now))
        };
        if start_driver {
            // Only a sharing budget leases a reserve; its refreshes run on the runtime.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(drive(Arc::clone(self)))),
                Err(_) => self.ledger().driver_not_started(),
            }
        }
        admission
    }

    /// The upstream answered `429`: no call on this credential until
    /// `pause` has passed, on any replica sharing the budget.
    pub fn pause(&self, pause: Duration) {
        if self.pause_here(pause) {
            if let Some(shared) = &self.shared {
                shared.tell_pause(pause);
            }
        }
    }

    /// Pauses this replica's calls on the credential (another replica told
    /// of a `429`, or this one got it); says whether the pause's end moved.
    pub(super) fn pause_here(&self, pause: Duration) -> bool {
        let until = now() + pause;
        // Its own statement: the lock is let go before anything else.
        let extended = self.ledger().pause(until);
        if extended {
            self.metrics.paused_until(until);
            self.driver_wake.notify_one();
        }
        extended
    }

    pub(super) fn reconfigure(&self, settings: &BudgetSettings, now: Instant) {
        self.ledger().reconfigure(settings, now);
        self.driver_wake.notify_one();
    }

    pub(super) fn is_at_rest(&self, now: Instant) -> bool {
        self.ledger().is_at_rest(now)
    }

    pub(super) fn view(&self, now: Instant) -> LedgerView {
        self.ledger().view(now)
    }
}

/// Hands tokens to waiting calls as they come, leasing them from the
/// shared bucket when there is one; stops when nobody waits.
async fn drive(budget: Arc<Budget>) {
    loop {
        // Its own statement: the lock is let go before the wait.
        let step = budget.ledger().drive(now());
        match step {
            DriverStep::Done => return,
            DriverStep::WaitUntil(next) => tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
                () = budget.driver_wake.notified() => {}
            },
            DriverStep::Lease { wanted, shape } => {
                // The round trip holds no lock. (A lease step comes only
                // from a sharing ledger, whose budget has a shared side.)
                let answer = match &budget.shared {
                    Some(shared) => shared.lease(shape, wanted).await,
                    None => Err(SharedError::Unavailable),
                };
                let paused = budget.ledger().leased(answer, now());
                if let Some(until) = paused {
                    budget.metrics.paused_until(until);
                }
            }
        }
    }
}

/// A queued call's claim on its place; dropped unsettled (the caller went
/// away), it leaves the queue and hands on a token already sent to it.
struct Ticket<'a> {
    budget: &'a Budget,
    who: ClientIdentity,
    ticket: u64,
    receiver: oneshot::Receiver<()>,
    settled: bool,
}

impl Ticket<'_> {
    /// The deadline passed: out of the queue and refused, unless the token
    /// came meanwhile.
    fn give_up(&mut self, start: Instant) -> Admission {
        self.settled = true;
        let now = now();
        let waited = now.saturating_duration_since(start);
        let mut ledger = self.budget.ledger();
        match ledger.withdraw(&self.who, self.ticket, &mut self.receiver) {
            Withdrawal::AlreadyGranted => Admission::Granted { waited },
            Withdrawal::Withdrawn => {
                let (reason, retry_after_secs) = ledger.refusal(&self.who, now);
                Admission::Refused {
                    retry_after_secs,
                    reason,
                    waited,
                }
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut ledger = self.budget.ledger();
        if ledger.withdraw(&self.who, self.ticket, &mut self.receiver) == Withdrawal::AlreadyGranted
        {
            ledger.return_token(now());
        }
    }
}

#[cfg(test)]
mod tests;
