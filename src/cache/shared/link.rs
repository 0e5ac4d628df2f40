//! The connection to Redis: made in the background, every operation bounded by `shared.timeout`, faults counted and warned about at most once a minute.
//!
//! A Redis that is down, slow or answering errors must never become a
//! client's problem. So no operation waits for a connection to be made,
//! each one gives up after the timeout, and after a fault the tier rests for
//! [`REST`] (every operation is skipped at once, as nginx skips an upstream
//! for its `fail_timeout`) before the next request probes it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisFuture, ScriptInvocation, Value};

use super::tier_metrics::TierMetrics;
use crate::cache::tasks::BackgroundTask;
use crate::config::SharedSettings;

/// How long the tier is left alone after a fault before it is tried again.
pub const REST: Duration = Duration::from_secs(1);
/// At most one warning about the tier per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why a Redis operation gave no answer; each means "act as if alone".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedError {
    /// Not attempted: the tier is resting after a recent fault.
    Resting,
    /// No connection yet, or it broke.
    Unavailable,
    /// No answer within `shared.timeout`.
    Timeout,
    /// Redis answered with an error.
    Refused,
}

impl SharedError {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedError::Resting => "resting",
            SharedError::Unavailable => "unavailable",
            SharedError::Timeout => "timeout",
            SharedError::Refused => "refused",
        }
    }
}

/// A standalone server's self-healing connection, or a cluster's once its
/// topology has been read.
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One Redis (or cluster) and what the tier knows of its health.
pub struct Link {
    /// Empty until the connecting task has made the connection.
    connection: Arc<ArcSwapOption<Connection>>,
    timeout: Duration,
    health: Health,
    metrics: Arc<TierMetrics>,
}

impl Link {
    /// The link, and the task that connects it (the caller spawns it);
    /// never waits, never fails on a Redis that is down (only on a URL the
    /// client cannot use).
    pub fn open(
        settings: &SharedSettings,
        metrics: Arc<TierMetrics>,
    ) -> redis::RedisResult<(Link, BackgroundTask)> {
        let slot = Arc::new(ArcSwapOption::empty());
        let connecting: BackgroundTask = if settings.cluster {
            let builder = ClusterClientBuilder::new(vec![settings.redis_url.as_str()])
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1);
            Box::pin(connect_cluster(builder.build()?, Arc::clone(&slot)))
        } else {
            let client = redis::Client::open(settings.redis_url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(REST);
            Box::pin(connect_single(client, config, Arc::clone(&slot)))
        };
        let link = Link {
            connection: slot,
            timeout: settings.timeout,
            health: Health::new(),
            metrics,
        };
        Ok((link, connecting))
    }

    /// Runs `command`, bounded by the timeout; any fault is counted, may be
    /// warned about, and rests the tier.
    pub async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, SharedError> {
        let mut connection = self.handle()?;
        let answer =
            tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        self.settle(answer)
    }

    /// Runs a script by its digest (`EVALSHA`, loading it first when Redis
    /// does not know it), the whole exchange bounded by the timeout, faults
    /// handled as in [`Link::query`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let mut connection = self.handle()?;
        let answer =
            tokio::time::timeout(self.timeout, script.invoke_async::<T>(&mut connection)).await;
        self.settle(answer)
    }

    /// The connection for one operation; none while resting or unconnected.
    fn handle(&self) -> Result<Handle, SharedError> {
        if self.health.resting() {
            return Err(SharedError::Resting);
        }
        match self.connection.load().as_deref() {
            Some(Connection::Single(manager)) => Ok(Handle::Single(manager.clone())),
            Some(Connection::Cluster(cluster)) => Ok(Handle::Cluster(cluster.clone())),
            None => Err(self.fault(SharedError::Unavailable)),
        }
    }

    /// An operation's answer, or the fault it was (counted, maybe warned about).
    fn settle<T>(
        &self,
        answer: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, SharedError> {
        match answer {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Ok(value)
            }
            Ok(Err(error)) if error.is_timeout() => Err(self.fault(SharedError::Timeout)),
            Ok(Err(error)) if error.is_io_error() || error.is_connection_refusal() => {
                Err(self.fault(SharedError::Unavailable))
            }
            Ok(Err(_)) => Err(self.fault(SharedError::Refused)),
            Err(_) => Err(self.fault(SharedError::Timeout)),
        }
    }

    /// The bound on every operation (`shared.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the connecting task has made the connection.
    #[cfg(test)]
    pub fn has_connection(&self) -> bool {
        self.connection.load().is_some()
    }

    /// Whether the last operation reached Redis.
    pub fn is_up(&self) -> bool {
        !self.health.down.load(Ordering::Relaxed)
    }

    fn fault(&self, error: SharedError) -> SharedError {
        self.metrics.error(error.as_str());
        if self.health.failed() {
            tracing::warn!(
                target: "ayra_cache::shared",
                error = error.as_str(),
                rest_ms = REST.as_millis() as u64,
                "the shared tier failed; serving from the local cache and upstream alone"
            );
        }
        error
    }
}

/// Makes the standalone connection: lazy (it connects on first use) and
/// self-healing. Made here rather than in [`Link::open`] because the
/// manager starts a task of its own, which belongs on the runtime that runs
/// the tier's background work.
async fn connect_single(
    client: redis::Client,
    config: ConnectionManagerConfig,
    slot: Arc<ArcSwapOption<Connection>>,
) {
    match ConnectionManager::new_lazy_with_config(client, config) {
        Ok(manager) => slot.store(Some(Arc::new(Connection::Single(manager)))),
        Err(error) => tracing::error!(
            target: "ayra_cache::shared",
            %error,
            "the shared tier's connection could not be made; caching alone"
        ),
    }
}

/// Reads the cluster's topology until it answers, then hands the connection
/// over; the connection follows topology changes by itself afterwards.
async fn connect_cluster(
    client: redis::cluster::ClusterClient,
    slot: Arc<ArcSwapOption<Connection>>,
) {
    loop {
        match client.get_async_connection().await {
            Ok(connection) => {
                slot.store(Some(Arc::new(Connection::Cluster(connection))));
                return;
            }
            Err(_) => tokio::time::sleep(REST).await,
        }
    }
}

/// One operation's connection, whichever kind the tier has.
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(connection) => connection.req_packed_command(cmd),
            Handle::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(connection) => connection.get_db(),
            Handle::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Whether the tier is resting, and when it last warned.
struct Health {
    started: Instant,
    /// Milliseconds since `started` until which operations are skipped.
    resting_until: AtomicU64,
    /// Milliseconds since `started` of the last warning; `u64::MAX`: never.
    warned_at: AtomicU64,
    down: AtomicBool,
}

impl Health {
    fn new() -> Health {
        Health {
            started: Instant::now(),
            resting_until: AtomicU64::new(0),
            warned_at: AtomicU64::new(u64::MAX),
            down: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn resting(&self) -> bool {
        self.resting_at(self.now_ms())
    }

    fn resting_at(&self, now: u64) -> bool {
        now < self.resting_until.load(Ordering::Relaxed)
    }

    /// Rests the tier; true when a warning is due.
    fn failed(&self) -> bool {
        self.failed_at(self.now_ms())
    }

    fn failed_at(&self, now: u64) -> bool {
        self.resting_until
            .store(now + REST.as_millis() as u64, Ordering::Relaxed);
        self.down.store(true, Ordering::Relaxed);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        due && self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(target: "ayra_cache::shared", "the shared tier answers again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_rests_the_tier_and_warns_once_a_minute() {
        let health = Health::new();
        let minute = WARN_EVERY.as_millis() as u64;
        let rest = REST.as_millis() as u64;
        assert!(!health.resting_at(5_000));
        assert!(health.failed_at(5_000), "the first fault warns");
        assert!(health.resting_at(5_000 + rest - 1));
        assert!(!health.resting_at(5_000 + rest), "the rest ends by itself");
        assert!(
            !health.failed_at(5_000 + rest),
            "no second warning within the minute"
        );
        assert!(!health.failed_at(5_000 + minute - 1));
        assert!(
            health.failed_at(5_000 + minute),
            "a minute later it warns again"
        );
        health.succeeded();
        assert!(!health.down.load(Ordering::Relaxed));
    }
}
