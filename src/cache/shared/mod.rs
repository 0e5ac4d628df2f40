//! The shared tier: a Redis (or Redis Cluster) that replicas use as a second cache behind their own, with one upstream fetch per key across all of them.
//!
//! Split by topic: [`link`] (the connection, timeouts and health),
//! [`names`] (the key layout), [`value`] (format and sealing), [`notices`]
//! (pub/sub between replicas) and [`metrics`]. Every operation here answers
//! "nothing" rather than failing: a Redis fault is never a client's error.

mod link;
mod metrics;
mod names;
mod notices;
mod value;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::Cmd;
use tokio::sync::broadcast;

use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::record::{self, Clocks, Record};
use crate::config::SharedSettings;
use crate::route::ConversationId;
use link::Link;
pub use link::SharedError;
pub use metrics::SharedMetrics;
use metrics::{LookupResult, WaitOutcome};
use names::Names;
pub use notices::Notice;
use value::Sealer;

/// How often a replica waiting on another's fetch looks for its value,
/// besides being woken by the notice.
const POLL: Duration = Duration::from_millis(50);

/// Writes a value, indexes it under its conversation and lets go of the
/// claim if the writer holds it, in one step (one slot).
const STORE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
return 1";

/// Lets go of a claim, only if this holder still has it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Deletes every value a conversation's index names, and the index.
const PURGE: &str = r"
local purged = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  purged = purged + redis.call('UNLINK', name)
end
redis.call('UNLINK', KEYS[1])
return purged";

/// What a claim on a key's fetch gave.
pub enum Claim {
    /// This replica fetches; the guard lets go of the claim when dropped.
    Held(ClaimGuard),
    /// Another replica is fetching.
    Taken,
    /// Redis gave no answer: fetch as if alone.
    Unavailable,
}

/// The Redis tier and this replica's view of it.
pub struct SharedTier {
    link: Link,
    names: Names,
    sealer: Sealer,
    notices: broadcast::Sender<Notice>,
    lock_ttl: Duration,
    metrics: Arc<SharedMetrics>,
}

impl SharedTier {
    /// Starts connecting and listening in the background; never waits for Redis.
    pub fn start(
        settings: &SharedSettings,
        metrics: Arc<SharedMetrics>,
    ) -> redis::RedisResult<Arc<SharedTier>> {
        let names = Names::new(&settings.key_prefix);
        let (notices, _) = broadcast::channel(1024);
        tokio::spawn(notices::listen(
            redis::Client::open(settings.redis_url.as_str())?,
            names.channel(),
            settings.timeout,
            notices.clone(),
        ));
        Ok(Arc::new(SharedTier {
            link: Link::open(settings, Arc::clone(&metrics))?,
            names,
            sealer: Sealer::new(settings.encryption_key),
            notices,
            lock_ttl: settings.lock_ttl,
            metrics,
        }))
    }

    /// The notices other replicas (and this one) publish.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Whether the last operation reached Redis.
    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// The fresh value for `key`, if Redis holds one this replica may serve.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
        let name = self.names.value(key);
        let found = self
            .link
            .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name))
            .await;
        let (result, entry) = match found {
            Err(_) => (LookupResult::Error, None),
            Ok(None) => (LookupResult::Miss, None),
            Ok(Some(value)) => self.read(key, &name, value),
        };
        self.metrics.lookup(result);
        entry
    }

    /// Opens, decodes and checks a value against this replica's clock.
    fn read(
        &self,
        key: &CacheKey,
        name: &str,
        value: Vec<u8>,
    ) -> (LookupResult, Option<CachedResponse>) {
        let Some(record) = self
            .sealer
            .open(name, value)
            .ok()
            .and_then(|bytes| Record::decode(&bytes))
        else {
            return (LookupResult::Unreadable, None);
        };
        // The URL deadline, checked on the wall clock before anything else.
        if record.hard_ms().is_some_and(|hard| hard <= wall_ms()) {
            return (LookupResult::Expired, None);
        }
        match record.restore(Clocks::now()) {
            Some((stored_key, entry)) if stored_key == *key => {
                match entry.freshness(Instant::now()) {
                    Freshness::Fresh => (LookupResult::Hit, Some(entry)),
                    Freshness::Stale => (LookupResult::Miss, None),
                    Freshness::Dead => (LookupResult::Expired, None),
                }
            }
            _ => (LookupResult::Unreadable, None),
        }
    }

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
                self.metrics.claim("held");
                Claim::Held(ClaimGuard {
                    tier: Arc::clone(self),
                    value,
                    claim,
                    token,
                    armed: true,
                })
            }
            Ok(None) => {
                self.metrics.claim("taken");
                Claim::Taken
            }
            Err(_) => {
                self.metrics.claim("error");
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

    /// Writes `entry` in the background, expiring at its `usable_until`, and
    /// tells the waiters; lets go of `claim` either way.
    pub fn put(
        self: &Arc<Self>,
        key: CacheKey,
        entry: Arc<CachedResponse>,
        claim: Option<ClaimGuard>,
    ) {
        let tier = Arc::clone(self);
        tokio::spawn(async move {
            let written = tier.write(&key, &entry, claim.as_ref()).await;
            tier.metrics.write(written.is_ok());
            if let (Ok(name), Some(mut claim)) = (written, claim) {
                // The write let go of the claim already.
                claim.armed = false;
                tier.publish(&Notice::Stored(name)).await;
            }
        });
    }

    async fn write(
        &self,
        key: &CacheKey,
        entry: &Arc<CachedResponse>,
        claim: Option<&ClaimGuard>,
    ) -> Result<String, SharedError> {
        let clocks = Clocks::now();
        let left = entry
            .usable_until()
            .saturating_duration_since(clocks.now_instant());
        let name = self.names.value(key);
        let value = record::encode(key, entry, clocks)
            .and_then(|bytes| self.sealer.seal(&name, bytes))
            .filter(|_| left >= Duration::from_millis(1))
            .ok_or(SharedError::Refused)?;
        let index = self.names.index(&key.id);
        let claim_name = self.names.claim(&name);
        let store = redis::cmd("EVAL")
            .arg(STORE)
            .arg(3)
            .arg(&name)
            .arg(&index)
            .arg(&claim_name)
            .arg(value)
            .arg(left.as_millis() as u64)
            .arg(claim.map_or("", |claim| claim.token.as_str()))
            .clone();
        self.link.query::<i64>(&store).await?;
        let usable_until_ms = clocks.to_wall(entry.usable_until()) as u64;
        let conversations = self.names.conversations();
        let index_it = redis::cmd("ZADD")
            .arg(&conversations)
            .arg("GT")
            .arg(usable_until_ms)
            .arg(key.id.as_str())
            .clone();
        self.link.query::<i64>(&index_it).await?;
        let trim = redis::cmd("ZREMRANGEBYSCORE")
            .arg(&conversations)
            .arg("-inf")
            .arg(wall_ms() as u64)
            .clone();
        self.link.query::<i64>(&trim).await?;
        Ok(name)
    }

    /// Deletes every value of conversation `id` and tells every replica to
    /// drop its local copies; returns how many values were deleted.
    pub async fn purge_conversation(&self, id: &ConversationId) -> Result<u64, SharedError> {
        let purged = self.delete_conversation(id.as_str()).await?;
        let forget = redis::cmd("ZREM")
            .arg(self.names.conversations())
            .arg(id.as_str())
            .clone();
        self.link.query::<i64>(&forget).await?;
        self.publish(&Notice::Purge(id.as_str().to_owned())).await;
        Ok(purged)
    }

    /// Deletes every value and tells every replica to drop its local copies.
    pub async fn purge_all(&self) -> Result<u64, SharedError> {
        let conversations = self.names.conversations();
        let ids: Vec<String> = self
            .link
            .query(redis::cmd("ZRANGE").arg(&conversations).arg(0).arg(-1))
            .await?;
        let mut purged = 0;
        for id in &ids {
            purged += self.delete_conversation(id).await?;
        }
        self.link
            .query::<i64>(redis::cmd("DEL").arg(&conversations))
            .await?;
        self.publish(&Notice::PurgeAll).await;
        Ok(purged)
    }

    async fn delete_conversation(&self, id: &str) -> Result<u64, SharedError> {
        let Ok(id) = ConversationId::parse(id) else {
            return Ok(0);
        };
        let purge = redis::cmd("EVAL")
            .arg(PURGE)
            .arg(1)
            .arg(self.names.index(&id))
            .clone();
        self.link.query::<u64>(&purge).await
    }

    async fn publish(&self, notice: &Notice) {
        let publish: Cmd = redis::cmd("PUBLISH")
            .arg(self.names.channel())
            .arg(notice.encode())
            .clone();
        let _ = self.link.query::<i64>(&publish).await;
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

fn wall_ms() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i128
}
