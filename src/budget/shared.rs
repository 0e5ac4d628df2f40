//! One credential's budget as seen in Redis: its leases, and the pauses it tells every replica.
//!
//! **Pauses go through a key, not a notice.** When an upstream `429`
//! pauses a credential, the replica that got it sets a key with `PX` beside
//! the credential's bucket, and the lease script answers "paused" while
//! that key lives. A replica holds no token it did not lease (beyond the
//! leftover of a lease its calls gave up on, usually none: it asks only
//! for the calls waiting), so every replica's next call on the credential
//! leases, finds the pause, and waits for the same end, as measured by
//! Redis. Unlike a pub/sub notice, the key cannot be missed: not by a
//! replica whose subscription is reconnecting, nor by one that starts
//! during the pause, and it ends by itself with no clock of a replica
//! involved. What it costs: a replica learns of the pause at its next
//! call, so its `/admin/stats` shows the pause only from then.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::shared::{BucketShape, LeaseAnswer, SharedError, SharedTier};

use super::UpstreamCredential;

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
            UpstreamCredential::Anonymous => "anon".to_owned(),
            UpstreamCredential::Key(fingerprint) => hex::encode(fingerprint.digest()),
        };
        SharedBudget { tier, name }
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
