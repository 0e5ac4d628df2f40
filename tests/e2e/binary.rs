//! The real `ayra-cache` binary: config checks and exit codes, environment overrides, logs, SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::ConfigFile;
use crate::cached_route::header;
use crate::log_tail::LogTail;
use crate::standin::StandIn;

const BINARY: &str = env!("CARGO_BIN_EXE_ayra-cache");

fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BINARY)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run ayra-cache")
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["config/ayra-cache.toml", "config/demo.toml"] {
        let output = check_config(&root.join(name), &[]);
        assert!(output.status.success(), "{name}: {output:?}");
    }
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[cache]\nmax_ttl = \"forever\"\n", vec![], "cache.max_ttl"),
        ("[server]\nlistn = \"x\"\n", vec![], "server.listn"),
        (
            "[upstream]\napi_key = \"sk\"\n",
            vec![],
            "auth.client_tokens_sha256",
        ),
        (
            "",
            vec![("AYRA_CACHE__UPSTREAM__TIMEOUT", "soon")],
            "upstream.timeout",
        ),
        (
            "[server]\nworker_threads = 5000\n",
            vec![],
            "server.worker_threads",
        ),
        (
            "[upstream.budget]\nrate = -1\n",
            vec![],
            "upstream.budget.rate",
        ),
        (
            "[upstream.budget]\nrate = 5\nburst = 0\n",
            vec![],
            "upstream.budget.burst",
        ),
        (
            "[upstream.budget]\nmax_wait = \"1h\"\n",
            vec![],
            "upstream.budget.max_wait",
        ),
    ];
    for (text, env, key) in cases {
        let path = write(&dir, text);
        let output = check_config(&path, &env);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
    let missing = check_config(&dir.path().join("absent.toml"), &[]);
    assert_eq!(missing.status.code(), Some(2));
}

pub use crate::redis::free_port;

/// The binary, running; killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Its stderr, as written.
    pub log: LogTail,
    /// The config file's folder, when [`launch`] wrote it.
    _config: Option<tempfile::TempDir>,
}

impl Running {
    /// Everything the process wrote to stderr (call once it has exited).
    pub fn logs(&mut self) -> String {
        self.log.finish()
    }

    /// Sends SIGTERM, expects a clean exit within 5 s, and returns the log.
    pub fn stop(&mut self) -> String {
        sigterm(&self.child);
        assert_eq!(
            wait_for_exit(&mut self.child, Duration::from_secs(5)),
            Some(0)
        );
        self.logs()
    }
}

/// The JSON events of a log, in order.
pub fn json_events(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start(config: &Path, env: &[(&str, &str)], addr: SocketAddr) -> Running {
    let mut child = Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ayra-cache");
    let log = LogTail::follow(child.stderr.take().expect("piped stderr"));
    let running = Running {
        child,
        addr,
        log,
        _config: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ayra-cache did not start listening on {addr}");
}

/// The binary with `config` on a free loopback port (and `env`), running.
pub async fn launch(mut config: ConfigFile, env: &[(&str, &str)]) -> Running {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.set("server.listen", &format!("\"{addr}\""));
    let dir = tempfile::tempdir().unwrap();
    let path = config.write(&dir);
    let mut running = start(&path, env, addr).await;
    running._config = Some(dir);
    running
}

pub fn sigterm(child: &std::process::Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
}

#[tokio::test]
async fn the_binary_serves_logs_one_json_event_per_request_and_drains_on_sigterm() {
    let standin = StandIn::spawn().await;
    standin.set("conv_slow", json!({"delay_ms": 700})).await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ConfigFile::for_upstream("http://127.0.0.1:1");
    config
        .set("log.level", "\"info\"")
        .set("log.format", "\"json\"");
    let path = config.write(&dir);
    let listen = format!("127.0.0.1:{port}");
    let base_url = standin.base_url();
    let env = [
        ("AYRA_CACHE__SERVER__LISTEN", listen.as_str()),
        ("AYRA_CACHE__UPSTREAM__BASE_URL", base_url.as_str()),
        ("AYRA_CACHE__UPSTREAM__API_KEY", "007"),
        (
            "AYRA_CACHE__AUTH__CLIENT_TOKENS_SHA256",
            &sha256_hex("tok-secret-1"),
        ),
    ];
    let mut running = start(&path, &env, listen.parse().unwrap()).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{}", running.addr, p);
    for expected in ["MISS", "HIT"] {
        let response = client
            .get(url("/v1/conversations/conv_bin"))
            .bearer_auth("tok-secret-1")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "x-cache"), expected);
    }
    let seen = standin.stats().await.requests;
    assert_eq!(seen[0].header("authorization"), Some("Bearer 007"));

    // A slow request in flight when SIGTERM arrives still completes.
    let slow = tokio::spawn(
        client
            .get(url("/v1/conversations/conv_slow"))
            .bearer_auth("tok-secret-1")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&running.child);
    let slow = slow
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(slow.status(), 200);
    let status = wait_for_exit(&mut running.child, Duration::from_secs(5));
    assert_eq!(status, Some(0));

    let logs = running.logs();
    assert!(
        // "007" alone could end a random request id; the key shows as a
        // whole value or behind its scheme.
        !logs.contains("tok-secret-1") && !logs.contains("\"007\"") && !logs.contains("Bearer 007"),
        "{logs}"
    );
    let access: Vec<Value> = json_events(&logs)
        .into_iter()
        .filter(|event| event["target"] == "ayra_cache::access")
        .collect();
    assert_eq!(access.len(), 3, "{logs}");
    let first = &access[0];
    for field in [
        "method",
        "path",
        "status",
        "cache",
        "latency_ms",
        "request_id",
    ] {
        assert!(!first[field].is_null(), "{field} missing in {first}");
    }
    assert_eq!(first["cache"], "miss");
    assert!(first["upstream_ms"].is_number());
    assert_eq!(access[1]["cache"], "hit");
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub fn wait_for_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn shutdown_waits_no_longer_than_the_grace() {
    let standin = StandIn::spawn().await;
    standin.set("conv_stuck", json!({"delay_ms": 5000})).await;
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("server.shutdown_grace", "\"300ms\"")
        .set("upstream.timeout", "\"10s\"");
    let mut running = launch(config, &[]).await;
    let url = format!("http://{}/v1/conversations/conv_stuck", running.addr);
    let stuck = tokio::spawn(reqwest::Client::new().get(url).bearer_auth("k").send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    sigterm(&running.child);
    let status = wait_for_exit(&mut running.child, Duration::from_secs(3));
    assert_eq!(status, Some(0));
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    assert!(stuck.await.unwrap().is_err(), "the stuck request was cut");
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn the_runtime_has_the_worker_threads_asked_for() {
    let standin = StandIn::spawn().await;
    for (asked, expected) in [("3", 3), ("0", num_cpus())] {
        let mut config = ConfigFile::for_upstream(&standin.base_url());
        config.set("server.worker_threads", asked);
        let mut running = launch(config, &[]).await;
        let url = format!("http://{}/v1/conversations/conv_threads", running.addr);
        let answer = reqwest::Client::new()
            .get(url)
            .bearer_auth("k")
            .send()
            .await;
        assert_eq!(answer.unwrap().status(), 200);
        let workers = threads_named(running.child.id(), "ayra-worker-");
        assert_eq!(workers, expected, "worker_threads = {asked}");
        running.stop();
    }
}

/// CPU time, in clock ticks, of the threads of `pid` that `pick` chooses by (thread id, name).
fn cpu_ticks(pid: u32, pick: impl Fn(u32, &str) -> bool) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let tid: u32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !pick(tid, name.trim_end()) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // After the name in parentheses: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

#[tokio::test]
async fn requests_are_served_on_the_worker_threads() {
    let standin = StandIn::spawn().await;
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config.set("server.worker_threads", "2");
    let mut running = launch(config, &[]).await;
    let pid = running.child.id();
    let on_workers = |_: u32, name: &str| name.starts_with("ayra-worker-");
    // The control thread is the main one: it accepts, it does not serve.
    let on_control = |tid: u32, _: &str| tid == pid;
    let (workers_before, control_before) = (cpu_ticks(pid, on_workers), cpu_ticks(pid, on_control));
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/conversations/conv_where", running.addr);
    for _ in 0..3000 {
        let answer = client.get(&url).bearer_auth("k").send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap();
    }
    let workers = cpu_ticks(pid, on_workers) - workers_before;
    let control = cpu_ticks(pid, on_control) - control_before;
    assert!(
        workers >= 5,
        "the workers used {workers} ticks for 3000 requests"
    );
    assert!(
        control * 5 < workers,
        "the control thread used {control} ticks, the workers {workers}"
    );
    running.stop();
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[test]
fn version_and_help_come_from_the_cli_parser() {
    let version = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(version.status.success());
    let text = String::from_utf8_lossy(&version.stdout);
    assert_eq!(
        text.trim(),
        format!("ayra-cache {}", env!("CARGO_PKG_VERSION"))
    );
    let help = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--config") && text.contains("--check-config"),
        "{text}"
    );
    let wrong = Command::new(BINARY).arg("--nonsense").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}

#[tokio::test]
async fn a_summary_event_is_logged_every_interval() {
    let standin = StandIn::spawn().await;
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("log.level", "\"info\"")
        .set("log.summary_interval", "\"300ms\"");
    let mut running = launch(config, &[]).await;
    let port = running.addr.port();
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let url = format!("http://127.0.0.1:{port}/v1/conversations/conv_sum");
        client.get(url).bearer_auth("k").send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    sigterm(&running.child);
    assert_eq!(
        wait_for_exit(&mut running.child, Duration::from_secs(5)),
        Some(0)
    );
    let logs = running.logs();
    let summaries: Vec<Value> = json_events(&logs)
        .into_iter()
        .filter(|event| event["target"] == "ayra_cache::summary")
        .collect();
    assert!(summaries.len() >= 2, "{logs}");
    let first = &summaries[0];
    assert_eq!(first["entries"], 1, "{first}");
    assert_eq!(first["hits"], 3);
    assert_eq!(first["misses"], 1);
    assert_eq!(first["hit_ratio"], 0.75);
    assert!(first["bytes"].as_u64().unwrap() > 1000);
    assert_eq!(first["upstream_errors"], 0);
    // The next window starts from zero.
    assert_eq!(summaries[1]["hits"], 0);
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let standin = StandIn::spawn().await;
    for proxy_key in [true, false] {
        let mut config = ConfigFile::for_upstream(&standin.base_url());
        config.set("log.level", "\"trace\"");
        let mut env = vec![];
        let digest = sha256_hex("tok_SENTINEL_client");
        if proxy_key {
            env.push(("AYRA_CACHE__UPSTREAM__API_KEY", "sk_live_SENTINEL_key"));
            env.push(("AYRA_CACHE__AUTH__CLIENT_TOKENS_SHA256", digest.as_str()));
        }
        let mut running = launch(config, &env).await;
        let port = running.addr.port();
        let client = reqwest::Client::new();
        for path in [
            "/v1/conversations/conv_secret",
            "/v1/conversations/conv_secret",
            "/v1/agents",
        ] {
            let url = format!("http://127.0.0.1:{port}{path}");
            client
                .get(url)
                .bearer_auth("tok_SENTINEL_client")
                .send()
                .await
                .unwrap();
        }
        let logs = running.stop();
        assert!(logs.contains("conv_secret"), "the log was written");
        assert!(
            !logs.contains("SENTINEL"),
            "a secret reached the log (proxy key: {proxy_key})"
        );
    }
}

#[tokio::test]
async fn sigint_drains_and_exits_zero_too() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let standin = StandIn::spawn().await;
    let mut running = launch(ConfigFile::for_upstream(&standin.base_url()), &[]).await;
    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(
        wait_for_exit(&mut running.child, Duration::from_secs(5)),
        Some(0)
    );
}
