//! One credential's budget as seen in Redis: its leases, and the pauses it tells every replica.
//!
//! **Pauses: a key, and a notice.** When an upstream `429` pauses a
//! credential, the replica that got it sets a key with `PX` beside the
//! credential's bucket, and the lease script answers "paused" while that
//! key lives: every replica's next lease finds the pause and waits for the
//! same end, as measured by Redis. The key is the truth because it cannot
//! be missed (not by a replica whose subscription is reconnecting, nor by
//! one that starts during the pause) and ends by itself with no replica's
//! clock involved. The key alone was not enough: a replica may hold leased
//! tokens it has not spent (a lease whose calls gave up meanwhile, the one
//! a refresh had leased), and spending one needs no lease; the three-process
//! test saw such a call reach the upstream during the pause. So the pausing
//! replica also publishes a notice on the shared tier's channel
//! ([`follow_pauses`]), which pauses every replica's budget at once, and a
//! replica shows the pause in `/admin/stats` from then. A notice missed
//! leaves at most those held tokens to be spent; the key stops the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::cache::shared::{BucketShape, LeaseAnswer, Notice, SharedError, SharedTier};
use crate::domain::Fingerprint;

use super::{Budgets, UpstreamCredential};

/// The name of the anonymous credential's budget in Redis.
const ANONYMOUS: &str = "anon";

/// Pauses this replica's budgets as other replicas (and this one) tell of
/// upstream `429`s, until the channel closes. Only budgets held here are
/// paused: one made later finds the pause at its first lease.
pub(super) async fn follow_pauses(budgets: Arc<Budgets>, mut notices: broadcast::Receiver<Notice>) {
    loop {
        match notices.recv().await {
            Ok(Notice::BudgetPaused {
                credential,
                left_ms,
            }) => {
                if let Some(credential) = SharedBudget::credential_of(&credential) {
                    budgets.paused_elsewhere(credential, Duration::from_millis(left_ms));
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// A credential's budget in the shared tier.
#[derive(Debug, Clone)]
pub(super) struct SharedBudget {
    tier: Arc<SharedTier>,
    /// The credential in Redis: its fingerprint, never the key.
    name: String,
}

impl SharedBudget {
    pub fn new(tier: Arc<SharedTier>, credential: UpstreamCredential) -> SharedBudget {
        let name = match credential {
            UpstreamCredential::Anonymous => ANONYMOUS.to_owned(),
            UpstreamCredential::Key(fingerprint) => hex::encode(fingerprint.digest()),
        };
        SharedBudget { tier, name }
    }

    /// The credential a name in Redis stands for; none for anything else.
    pub fn credential_of(name: &str) -> Option<UpstreamCredential> {
        if name == ANONYMOUS {
            return Some(UpstreamCredential::Anonymous);
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(name, &mut digest).ok()?;
        Some(UpstreamCredential::Key(Fingerprint::from_digest(digest)))
    }

    /// The longest a lease waits for Redis (`shared.timeout`).
    pub fn round_trip(&self) -> Duration {
        self.tier.timeout()
    }

    /// Leases up to `wanted` tokens, bounded by `shared.timeout`.
    pub async fn lease(&self, shape: BucketShape, wanted: u32) -> Result<LeaseAnswer, SharedError> {
        self.tier.lease(&self.name, shape, wanted).await
    }

    /// Tells every replica of a pause, in the background (a `429` is being
    /// answered meanwhile); a Redis fault leaves the pause to this replica.
    pub fn tell_pause(&self, pause: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.clone();
        runtime.spawn(async move {
            let _ = shared.tier.pause_budget(&shared.name, pause).await;
        });
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod naming_tests {
    use super::*;

    #[test]
    fn a_budgets_name_in_redis_is_its_fingerprint_and_reads_back() {
        let key = UpstreamCredential::Key(Fingerprint::of(b"Bearer sk_live_secret"));
        for credential in [key, UpstreamCredential::Anonymous] {
            let name = match credential {
                UpstreamCredential::Anonymous => ANONYMOUS.to_owned(),
                UpstreamCredential::Key(f) => hex::encode(f.digest()),
            };
            assert!(!name.contains("sk_live"));
            assert_eq!(SharedBudget::credential_of(&name), Some(credential));
        }
        assert_eq!(SharedBudget::credential_of("zz"), None);
        assert_eq!(SharedBudget::credential_of("abcd"), None);
    }
}
