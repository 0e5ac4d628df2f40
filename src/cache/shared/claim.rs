//! Claims on a key's fetch: one replica fetches, the others wait for its value (woken by a notice, polling meanwhile), all bounded by `lock_ttl`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::tier_metrics::{ClaimResult, WaitOutcome};
use super::{Notice, SharedTier};
use crate::cache::entry::CachedResponse;
use crate::cache::key::CacheKey;

/// How often a replica waiting on another's fetch looks for its value,
/// besides being woken by the notice.
const POLL: Duration = Duration::from_millis(50);

/// Lets go of a claim, only if this holder still has it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// What a claim on a key's fetch gave.
pub enum Claim {
    /// This replica fetches; the guard lets go of the claim when dropped.
    Held(ClaimGuard),
    /// Another replica is fetching.
    Taken,
    /// Redis gave no answer: fetch as if alone.
    Unavailable,
}

impl SharedTier {
    /// Claims the fetch of `key` for this replica, for `lock_ttl` at most.
    pub async fn claim(self: &Arc<Self>, key: &CacheKey) -> Claim {
        let value = self.names.value(key);
        let claim = self.names.claim(&value);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let set = redis::cmd("SET")
            .arg(&claim)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ttl.as_millis() as u64)
            .clone();
        match self.link.query::<Option<String>>(&set).await {
            Ok(Some(_)) => {
                self.metrics.claim(ClaimResult::Held);
                Claim::Held(ClaimGuard {
                    tier: Arc::clone(self),
                    value,
                    claim,
                    token,
                    armed: true,
                })
            }
            Ok(None) => {
                self.metrics.claim(ClaimResult::Taken);
                Claim::Taken
            }
            Err(_) => {
                self.metrics.claim(ClaimResult::Error);
                Claim::Unavailable
            }
        }
    }

    /// Waits, `lock_ttl` at most, for the replica holding the claim on `key`
    /// to store a value `accept` takes; none when it let go without one,
    /// time ran out, or Redis stopped answering.
    pub async fn wait(
        &self,
        key: &CacheKey,
        accept: impl Fn(&CachedResponse) -> bool,
    ) -> Option<CachedResponse> {
        let name = self.names.value(key);
        let claim = self.names.claim(&name);
        // Subscribed before the first look, so no notice falls in between.
        let mut notices = self.notices.subscribe();
        let deadline = tokio::time::Instant::now() + self.lock_ttl;
        let peek = redis::cmd("MGET").arg(&name).arg(&claim).clone();
        let outcome = loop {
            let (value, holder) = match self
                .link
                .query::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&peek)
                .await
            {
                Ok(found) => found,
                Err(_) => break (WaitOutcome::Error, None),
            };
            if let Some(entry) = value.and_then(|value| self.read(key, &name, value).1) {
                if accept(&entry) {
                    break (WaitOutcome::Value, Some(entry));
                }
            }
            if holder.is_none() {
                break (WaitOutcome::Released, None);
            }
            let woken = async {
                loop {
                    match notices.recv().await {
                        Ok(Notice::Stored(n) | Notice::Released(n)) if n == name => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    }
                }
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(deadline) => break (WaitOutcome::TimedOut, None),
            }
        };
        self.metrics.claim_wait(outcome.0);
        outcome.1
    }
}

/// This replica's claim on a key's fetch; dropping it lets go of the claim
/// (in the background) and wakes the waiters, unless a write already did.
pub struct ClaimGuard {
    tier: Arc<SharedTier>,
    value: String,
    claim: String,
    token: String,
    armed: bool,
}

impl ClaimGuard {
    /// The random token that proves this replica holds the claim.
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// The claim was let go of already (by the write that stored the value).
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Shutting down: the claim lapses after lock_ttl by itself.
            return;
        };
        let tier = Arc::clone(&self.tier);
        let (value, claim, token) = (
            std::mem::take(&mut self.value),
            std::mem::take(&mut self.claim),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let release = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(&claim)
                .arg(&token)
                .clone();
            if tier.link.query::<i64>(&release).await.is_ok() {
                tier.publish(&Notice::Released(value)).await;
            }
        });
    }
}
