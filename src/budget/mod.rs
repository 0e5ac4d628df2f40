//! The API key's budget (SPEC section 12): upstream calls paced per upstream credential, waiting clients taking turns.
//!
//! **What it counts.** Upstream calls only: a cached-route fetch (one per
//! coalesced flight: requests that join a flight cost nothing), a
//! background refresh, a pass-through request. HITs, shared-tier hits and
//! micro-cached answers never reach it: the caller asks for a turn right
//! before it calls upstream, never before its cache lookup. There is one
//! [`Budget`] per [`UpstreamCredential`] (the proxy's `upstream.api_key`,
//! or in pass-through mode each client's own key), held by [`Budgets`].
//!
//! **Pacing.** A token bucket in its GCRA form (`bucket`): `rate` tokens
//! a second, at most `burst` held; `rate = 0` turns it all off. A reload
//! changes the pace for new calls at once and never grants a fresh burst.
//!
//! **Taking turns.** A call that finds a token and nobody waiting goes at
//! once: a read lock on the map of budgets (a writer holds it only to add
//! a credential or sweep), one short mutex, no allocation. Otherwise it waits, and waiting
//! calls are granted in rotation across [`ClientIdentity`]s (the client's
//! own token; anonymous clients are one identity), first come first served
//! within one (`turns`), so a client with hundreds of calls queued delays
//! another client's one call by at most one turn. A call whose turn cannot
//! come within `max_wait` (known at once, or found at its deadline) is
//! [`Admission::Refused`] with whole seconds until a turn could come. A
//! dropped waiting call loses no token: one already sent to it goes to the
//! next in turn, or back to the bucket. A background refresh takes a token
//! only when no client waits and never waits ([`RefreshAdmission`]).
//!
//! **The upstream's own 429.** [`pause_length`] reads its `retry-after`
//! (seconds or an HTTP date; 1 s without one; at most 5 minutes), and
//! [`Budgets::pause`] holds every call on that credential until then; a
//! later `429` extends a pause, never shortens it. With the budget off
//! (`rate = 0`) nothing is paused either: the proxy behaves as before.
//!
//! **Seen from outside.** [`BudgetMetrics`] (waits, wait seconds,
//! refusals by what the client got, the paused gauge) and
//! [`Budgets::snapshot`] for `/admin/stats` (fingerprint prefix, tokens,
//! waiting calls, paused until; never the key).
//!
//! **Where it is called.** `crate::spending` asks for a call's turn right
//! before the upstream call (a flight's leader, a refresh, pass-through)
//! and pauses a credential on the upstream's `429`; the composition root
//! (`crate::app`) builds [`Budgets`], sweeps it, and reload
//! [`Budgets::reconfigure`]s it on SIGHUP.
//!
//! **Across replicas.** With `[shared]` ([`Budgets::sharing`]), a call
//! also needs a token leased from its credential's bucket in Redis, one
//! GCRA per credential fingerprint (`cache::shared::budget_bucket`), so N
//! replicas together stay within `rate` and `burst`. Tokens are still taken
//! only in `ledger`, under the budget's lock; the budget's driver leases a
//! few per round trip outside it (`lease`: how many, and the fall back to
//! pacing alone at the full `rate` while Redis gives no answer, warned
//! about with the shared tier's other faults). A pause is a key in Redis
//! that every lease checks, and a notice that stops the tokens replicas
//! hold already (`shared` says why both). The composition root builds
//! [`Budgets::sharing`] with `Cache::shared_tier` and runs
//! [`Budgets::follow_shared_pauses`] beside the cache's tasks.

mod bucket;
mod decision;
mod lease;
mod ledger;
mod metrics;
mod pause;
mod registry;
mod shared;
mod turns;
mod waiting;

use std::time::Instant;

pub use bucket::{Bucket, Pace};
pub use decision::{Admission, ExhaustedOutcome, RefreshAdmission, RefusalReason};
pub use metrics::BudgetMetrics;
pub use pause::{pause_length, RetryAfter, DEFAULT_PAUSE, MAX_PAUSE};
pub use registry::{BudgetSnapshot, Budgets, UpstreamCredential};
pub use turns::ClientIdentity;
pub use waiting::Budget;

/// The budget's clock: tokio's, so tests can pause and advance it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
