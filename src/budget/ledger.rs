//! One credential's budget as kept under its mutex: bucket, pause and waiting calls; every step pure, `now` passed in.
//!
//! Tokens reach waiting calls only here, under the lock: `dispatch` takes a
//! token and hands it to the call whose turn it is, through that call's
//! one-shot channel. A call that gives up takes itself out under the same
//! lock, so a token is either still in the bucket, in a queued call's
//! channel, or spent: never lost (`withdraw`, `return_token`).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::BudgetSettings;

use super::bucket::{Bucket, Pace};
use super::decision::{RefreshAdmission, RefusalReason};
use super::lease::{Source, Supply, SupplyStep};
use super::pause::{retry_after_secs, Pause};
use super::turns::{ClientIdentity, Turns};
use crate::cache::shared::{BucketShape, LeaseAnswer, SharedError};

/// A queued call: its ticket, and where its token goes.
#[derive(Debug)]
pub(super) struct Waiter {
    ticket: u64,
    grant: oneshot::Sender<()>,
}

/// What a call finds when it arrives.
#[derive(Debug)]
pub(super) enum Arrival {
    /// A token was there and nobody was waiting.
    Granted,
    /// Its turn provably cannot come within `max_wait`.
    Refused {
        reason: RefusalReason,
        retry_after_secs: u64,
    },
    /// It waits for its token on `receiver` until `deadline`.
    Queued(Place),
}

/// A queued call's place.
#[derive(Debug)]
pub(super) struct Place {
    pub ticket: u64,
    pub receiver: oneshot::Receiver<()>,
    pub deadline: Instant,
    /// Nobody drives the queue yet: the caller starts the driver.
    pub start_driver: bool,
}

/// What a call that gave up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Withdrawal {
    /// It was still queued and is out now.
    Withdrawn,
    /// Its token had been sent: it holds one.
    AlreadyGranted,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DriverStep {
    /// Nobody waits: the driver stops.
    Done,
    /// Come back then (a token, or the end of a pause).
    WaitUntil(Instant),
    /// Lease up to `wanted` tokens from the shared bucket, then come back
    /// ([`Ledger::leased`]).
    Lease { wanted: u32, shape: BucketShape },
}

/// What the budget's snapshot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LedgerView {
    pub tokens: Option<u32>,
    pub waiting: usize,
    pub paused_until: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Ledger {
    bucket: Bucket,
    /// With `[shared]`: tokens leased from the bucket in Redis, which a
    /// call needs besides one of `bucket`'s (see `lease`).
    supply: Option<Supply>,
    pause: Pause,
    turns: Turns<Waiter>,
    max_wait: Duration,
    next_ticket: u64,
    /// A driver task hands out tokens as they come.
    driving: bool,
}

impl Ledger {
    pub fn new(settings: &BudgetSettings, now: Instant) -> Ledger {
        Ledger {
            bucket: Bucket::new(Pace::from_settings(settings), now),
            supply: None,
            pause: Pause::default(),
            turns: Turns::default(),
            max_wait: settings.max_wait,
            next_ticket: 0,
            driving: false,
        }
    }

    /// A ledger whose tokens are also leased from the bucket shared across replicas.
    /// `round_trip`: the longest a lease may take (`shared.timeout`).
    pub fn sharing(settings: &BudgetSettings, round_trip: Duration, now: Instant) -> Ledger {
        Ledger {
            supply: Supply::new(settings).map(|supply| supply.with_round_trip(round_trip)),
            ..Ledger::new(settings, now)
        }
    }

    /// Takes a token: one leased (when sharing) and one of the local bucket.
    fn take(&mut self, now: Instant) -> bool {
        let source = self
            .supply
            .as_ref()
            .map_or(Source::Local, |s| s.source(now));
        if source == Source::Lease || self.bucket.try_take(now).is_err() {
            return false;
        }
        if let (Source::Leased, Some(supply)) = (source, &mut self.supply) {
            supply.spend();
        }
        true
    }

    /// A call of `who` asks for its turn: granted at once with no allocation
    /// when nobody waits and a token is there, else queued or refused.
    pub fn arrive(&mut self, who: ClientIdentity, now: Instant) -> Arrival {
        if self.turns.is_empty() && self.pause.until(now).is_none() && self.take(now) {
            return Arrival::Granted;
        }
        let grace = self
            .supply
            .as_ref()
            .map_or(Duration::ZERO, |s| s.grace(now));
        let deadline = now + self.max_wait + grace;
        let (turn_at, reason) = self.earliest_turn(&who, now);
        if turn_at > deadline {
            return Arrival::Refused {
                reason,
                retry_after_secs: retry_after_secs(turn_at, now),
            };
        }
        let (grant, receiver) = oneshot::channel();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.turns.push(who, Waiter { ticket, grant });
        self.dispatch(now);
        let start_driver = !self.driving && !self.turns.is_empty();
        self.driving |= start_driver;
        Arrival::Queued(Place {
            ticket,
            receiver,
            deadline,
            start_driver,
        })
    }

    /// The soonest a new call of `who` could get its token (behind the
    /// calls of `who` already waiting), and what holds it back. A lower
    /// bound: calls of other identities may come first.
    fn earliest_turn(&self, who: &ClientIdentity, now: Instant) -> (Instant, RefusalReason) {
        let token_at = self.bucket.token_at(now, self.turns.waiting_for(who));
        match self.pause.until(now) {
            Some(until) if until >= token_at => (until, RefusalReason::Paused),
            _ => (token_at, RefusalReason::Exhausted),
        }
    }

    /// Why a call of `who` that waited in vain gets no turn, and when to come back.
    pub fn refusal(&self, who: &ClientIdentity, now: Instant) -> (RefusalReason, u64) {
        let (turn_at, reason) = self.earliest_turn(who, now);
        (reason, retry_after_secs(turn_at, now))
    }

    /// Hands the tokens there are to the calls whose turn it is.
    pub fn dispatch(&mut self, now: Instant) {
        while !self.turns.is_empty() && self.pause.until(now).is_none() {
            if !self.take(now) {
                return;
            }
            if let Some((_, waiter)) = self.turns.pop_next() {
                if waiter.grant.send(()).is_err() {
                    // Gone without withdrawing (cannot happen while calls
                    // withdraw under the lock): the token stays.
                    self.bucket.give_back(now);
                }
            }
        }
    }

    /// The driver's step: dispatch, then what to do next; a lease only
    /// when the local bucket has a token and no pause holds calls back.
    pub fn drive(&mut self, now: Instant) -> DriverStep {
        self.dispatch(now);
        if self.turns.is_empty() {
            if let Some(SupplyStep::Lease { wanted, shape }) = self.reserve_step(now) {
                return DriverStep::Lease { wanted, shape };
            }
            self.driving = false;
            return DriverStep::Done;
        }
        let token_at = self.bucket.next_token_at(now);
        let ready_at = self
            .pause
            .until(now)
            .map_or(token_at, |until| until.max(token_at));
        if ready_at > now {
            return DriverStep::WaitUntil(ready_at);
        }
        match self
            .supply
            .as_ref()
            .and_then(|s| s.step(now, self.turns.len()))
        {
            Some(SupplyStep::Lease { wanted, shape }) => DriverStep::Lease { wanted, shape },
            Some(SupplyStep::WaitUntil(at)) => DriverStep::WaitUntil(at),
            // Not after a dispatch: a token there went to a waiting call.
            None => DriverStep::WaitUntil(ready_at),
        }
    }

    /// A lease's answer: its tokens go to the calls whose turn it is, its
    /// pause holds them back; says when a pause it reported now ends.
    pub fn leased(
        &mut self,
        answer: Result<LeaseAnswer, SharedError>,
        now: Instant,
    ) -> Option<Instant> {
        let paused = self.supply.as_mut()?.settle(answer, now);
        let extended = paused
            .map(|left| now + left)
            .filter(|until| self.pause.extend(*until));
        self.dispatch(now);
        extended
    }

    /// The driver [`Ledger::start_driver`] asked for could not be started.
    pub fn driver_not_started(&mut self) {
        self.driving = false;
    }

    /// Takes a call that gave up out of the queue; if its token was already
    /// sent, says so (the receiver is closed either way).
    pub fn withdraw(
        &mut self,
        who: &ClientIdentity,
        ticket: u64,
        receiver: &mut oneshot::Receiver<()>,
    ) -> Withdrawal {
        if self.turns.remove(who, |w| w.ticket == ticket).is_some() {
            return Withdrawal::Withdrawn;
        }
        receiver.close();
        match receiver.try_recv() {
            Ok(()) => Withdrawal::AlreadyGranted,
            Err(_) => Withdrawal::Withdrawn,
        }
    }

    /// A token granted to a call that went away: to the next in turn, or back to the bucket.
    pub fn return_token(&mut self, now: Instant) {
        self.bucket.give_back(now);
        self.dispatch(now);
    }

    /// A refresh takes a token only when no client waits for one; it never
    /// waits. Sharing, when it finds no leased token, it has one leased for
    /// the next refresh ([`Ledger::start_driver`]).
    pub fn try_refresh(&mut self, now: Instant) -> RefreshAdmission {
        if !self.turns.is_empty() || self.pause.until(now).is_some() {
            return RefreshAdmission::Skipped;
        }
        if self.take(now) {
            return RefreshAdmission::Granted;
        }
        if let Some(supply) = &mut self.supply {
            if supply.source(now) == Source::Lease {
                supply.want_reserve();
            }
        }
        RefreshAdmission::Skipped
    }

    /// The lease of a reserve token, when one is wanted, the local bucket
    /// has a token and no pause holds calls back.
    fn reserve_step(&self, now: Instant) -> Option<SupplyStep> {
        let ready = self.pause.until(now).is_none() && self.bucket.next_token_at(now) <= now;
        self.supply
            .as_ref()
            .filter(|_| ready)
            .and_then(|supply| supply.reserve_step(now))
    }

    /// Whether the caller starts the driver: there is work for it (calls
    /// waiting, a reserve to lease) and none runs.
    pub fn start_driver(&mut self, now: Instant) -> bool {
        let work = !self.turns.is_empty() || self.reserve_step(now).is_some();
        let start = work && !self.driving;
        self.driving |= start;
        start
    }

    /// Pauses every call until `until` (never shortening a pause); says
    /// whether the end moved.
    pub fn pause(&mut self, until: Instant) -> bool {
        self.pause.extend(until)
    }

    /// New settings (a reload), for calls from now on; the calls already
    /// waiting keep their deadlines.
    pub fn reconfigure(&mut self, settings: &BudgetSettings, now: Instant) {
        self.bucket.set_pace(Pace::from_settings(settings), now);
        if let Some(supply) = &mut self.supply {
            supply.reshape(settings);
        }
        self.max_wait = settings.max_wait;
        self.dispatch(now);
    }

    /// Nothing here a new ledger would not have: dropping it loses nothing.
    pub fn is_at_rest(&self, now: Instant) -> bool {
        !self.driving
            && self.turns.is_empty()
            && self.pause.until(now).is_none()
            && self.bucket.is_full(now)
    }

    pub fn view(&self, now: Instant) -> LedgerView {
        let leased = self.supply.as_ref().map(|s| match s.source(now) {
            Source::Local => u32::MAX,
            Source::Leased | Source::Lease => s.leased(),
        });
        LedgerView {
            tokens: self.bucket.tokens(now).map(|t| t.min(leased.unwrap_or(t))),
            waiting: self.turns.len(),
            paused_until: self.pause.until(now),
        }
    }
}

#[cfg(test)]
mod tests;
