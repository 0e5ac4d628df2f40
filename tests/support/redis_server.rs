//! Test support shared by the lib's unit tests and the e2e suite: loopback ports, and real `redis-server` processes (one standalone, or a three-master cluster).
//!
//! One file compiled into both test crates (`#[path]` from
//! `src/cache/shared/test_redis.rs` and from `tests/e2e/main.rs`), so each
//! uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing is bound to right now, for a server that a test
/// starts later (a Redis that arrives after the proxy, a restart on the same
/// port).
///
/// It is taken below the kernel's ephemeral range (32768-60999 by default),
/// from 12000-22767 so that a Redis cluster node's bus port (+10000) is below
/// it too: a port the kernel hands out with `bind(0)` can be given again to
/// the client side of any outgoing connection of a parallel test, or of a
/// proxy retrying that very port, before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 10_768;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Parallel test processes start at different places.
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}-{}", FIRST + COUNT - 1);
}

/// A `redis-server` on a loopback port; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_on(free_port(), false).await
    }

    /// A server on `port`, as a cluster node when `cluster`.
    pub async fn start_on(port: u16, cluster: bool) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            cluster,
        };
        server.restart().await;
        server
    }

    /// (Re)starts the process on the same port, with an empty data set.
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
                "--cluster-node-timeout",
                "3000",
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut connection) = self.connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
                {
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

    /// Whether it runs as a cluster node.
    pub fn is_cluster_node(&self) -> bool {
        self.cluster
    }

    /// A plain connection to this server (not cluster-aware).
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: a Redis that accepts
    /// connections but never answers.
    pub fn freeze(&self, frozen: bool) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let child = self.child.as_ref().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(pid, signal).unwrap();
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen process ignores SIGKILL until thawed on some systems.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        self.kill();
    }
}

/// Three masters, no replicas, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_on(free_port(), true).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .current_dir(nodes[0].dir())
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// The seed URL replicas are given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    async fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        'wait: while Instant::now() < deadline {
            for node in &self.nodes {
                let Ok(mut connection) = node.connection().await else {
                    continue 'wait;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'wait;
                }
            }
            return;
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    /// Every key on every node matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            let mut connection = node.connection().await.unwrap();
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut connection)
                .await
                .unwrap();
            keys.extend(found);
        }
        keys
    }
}
