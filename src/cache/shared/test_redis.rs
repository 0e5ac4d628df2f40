//! For in-crate tests: a real `redis-server` on a loopback port, and shared tiers connected to it as replicas would be.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{SharedTier, TierMetrics};
use crate::cache::tasks::CacheTasks;
use crate::config::SharedSettings;

/// A port free now, taken below the kernel's ephemeral range (as the e2e
/// suite's `free_port` does), so no outgoing connection of a parallel test
/// is handed it before the server binds it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 10_768;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Another start than the e2e suite's, which uses the same range.
    let start = std::process::id().wrapping_mul(6_007).wrapping_add(5_000);
    for _ in 0..COUNT {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}-{}", FIRST + COUNT - 1);
}

/// A `redis-server` (standalone, or a cluster node); killed when dropped.
pub struct TestRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl TestRedis {
    pub async fn start() -> TestRedis {
        TestRedis::start_as(false).await
    }

    async fn start_as(cluster: bool) -> TestRedis {
        let mut redis = TestRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary folder"),
            cluster,
        };
        redis.restart().await;
        redis
    }

    /// (Re)starts the process on the same port, empty, and waits for its `PONG`.
    pub async fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..500 {
            if let Ok(mut connection) = self.connection().await {
                let ping = redis::cmd("PING");
                if ping.query_async::<String>(&mut connection).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three cluster masters, no replicas, made with `redis-cli --cluster create`.
pub struct TestCluster {
    pub nodes: Vec<TestRedis>,
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(TestRedis::start_as(true).await);
        }
        let addresses = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port));
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(output.status.success(), "{output:?}");
        for node in &nodes {
            let mut connection = node.connection().await.unwrap();
            for _ in 0..500 {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        TestCluster { nodes }
    }
}

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
            cluster: redis.cluster,
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
