//! The shared tier: a Redis (or Redis Cluster) that replicas use as a second cache behind their own, with one upstream fetch per key across all of them.
//!
//! Split by topic: [`link`] (the connection, timeouts and health),
//! [`names`] (the key layout), [`value`] (format and sealing), [`claim`]
//! (one fetch per key across replicas), [`purge`], [`notices`] (pub/sub
//! between replicas), [`budget_bucket`] (the upstream budget shared across
//! replicas) and [`tier_metrics`]; this file reads and writes values. Every operation here answers
//! "nothing" rather than failing: a Redis fault is never a client's error.

mod budget_bucket;
mod claim;
mod link;
mod names;
mod notices;
mod purge;
#[cfg(test)]
pub(crate) mod test_redis;
mod tier_metrics;
mod value;

use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;
use tokio::sync::broadcast;

use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::record::{self, Clocks, Record};
use super::tasks::CacheTasks;
use crate::config::SharedSettings;
pub use budget_bucket::{BucketShape, LeaseAnswer};
pub use claim::{Claim, ClaimGuard};
use link::Link;
pub use link::{SharedError, REST};
use names::Names;
pub use notices::Notice;
use tier_metrics::LookupResult;
pub use tier_metrics::TierMetrics;
use value::Sealer;

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

/// The Redis tier and this replica's view of it.
pub struct SharedTier {
    link: Link,
    names: Names,
    sealer: Sealer,
    notices: broadcast::Sender<Notice>,
    lock_ttl: Duration,
    metrics: Arc<TierMetrics>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// The tier, and in `tasks` the work that connects it and listens for
    /// notices; never waits for Redis.
    pub fn start(
        settings: &SharedSettings,
        metrics: Arc<TierMetrics>,
        tasks: &mut CacheTasks,
    ) -> redis::RedisResult<Arc<SharedTier>> {
        let names = Names::new(&settings.key_prefix);
        let (notices, _) = broadcast::channel(1024);
        let listening = notices::listen(
            redis::Client::open(settings.redis_url.as_str())?,
            names.channel(),
            settings.timeout,
            notices.clone(),
        );
        let (link, connecting) = Link::open(settings, Arc::clone(&metrics))?;
        tasks.add_boxed("shared-tier connection", connecting);
        tasks.add("shared-tier notices", listening);
        Ok(Arc::new(SharedTier {
            link,
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

    /// The longest any operation waits for Redis (`shared.timeout`).
    pub fn timeout(&self) -> Duration {
        self.link.timeout()
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
        let clocks = Clocks::now();
        if record
            .hard_ms()
            .is_some_and(|hard| hard <= clocks.wall_ms())
        {
            return (LookupResult::Expired, None);
        }
        match record.restore(clocks) {
            Some((stored_key, entry)) if stored_key == *key => {
                match entry.freshness(clocks.now_instant()) {
                    Freshness::Fresh => (LookupResult::Hit, Some(entry)),
                    Freshness::Stale => (LookupResult::Miss, None),
                    Freshness::Dead => (LookupResult::Expired, None),
                }
            }
            _ => (LookupResult::Unreadable, None),
        }
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
                claim.disarm();
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
            .arg(claim.map_or("", ClaimGuard::token))
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
            .arg(clocks.wall_ms() as u64)
            .clone();
        self.link.query::<i64>(&trim).await?;
        Ok(name)
    }

    async fn publish(&self, notice: &Notice) {
        let publish: Cmd = redis::cmd("PUBLISH")
            .arg(self.names.channel())
            .arg(notice.encode())
            .clone();
        let _ = self.link.query::<i64>(&publish).await;
    }
}
