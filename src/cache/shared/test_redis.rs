//! For in-crate tests: a real `redis-server` on a loopback port, and shared tiers connected to it as replicas would be.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{SharedTier, TierMetrics};
use crate::cache::tasks::CacheTasks;
use crate::config::SharedSettings;

#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;
pub use redis_server::{RedisCluster as TestCluster, RedisServer as TestRedis};

/// One replica's shared tier on `redis`, its background work running
/// (aborted when the handles drop), connected once this returns.
pub struct TestTier {
    pub tier: Arc<SharedTier>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestTier {
    pub async fn connect(redis: &TestRedis, key_prefix: &str) -> TestTier {
        TestTier::connect_to(redis, key_prefix).await
    }

    /// A tier given `redis` (a standalone server, or a cluster node as its seed).
    async fn connect_to(redis: &TestRedis, key_prefix: &str) -> TestTier {
        let settings = SharedSettings {
            redis_url: redis.url(),
            cluster: redis.is_cluster_node(),
            key_prefix: key_prefix.to_owned(),
            timeout: Duration::from_millis(200),
            lock_ttl: Duration::from_secs(2),
            encryption_key: None,
        };
        let mut tasks = CacheTasks::default();
        let metrics = Arc::new(TierMetrics::default());
        let tier = SharedTier::start(&settings, metrics, &mut tasks).expect("a usable URL");
        let tasks = tasks
            .into_iter()
            .map(|(_, task)| tokio::spawn(task))
            .collect();
        // Not one query before the connection is there: it would count a
        // fault, and spend the one warning a test may be waiting for.
        while !tier.link.has_connection() {
            tokio::task::yield_now().await;
        }
        for _ in 0..500 {
            let ping = tier.link.query::<String>(&redis::cmd("PING")).await;
            if ping.is_ok() {
                return TestTier { tier, tasks };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the shared tier never reached redis on port {}", redis.port);
    }

    /// A tier on `cluster`, seeded with its first node.
    pub async fn connect_cluster(cluster: &TestCluster, key_prefix: &str) -> TestTier {
        TestTier::connect_to(&cluster.nodes[0], key_prefix).await
    }
}

impl Drop for TestTier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
