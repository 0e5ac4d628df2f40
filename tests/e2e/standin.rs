//! Test support: spawns the stand-in Ayra API (`ayra-standin`) and drives its control API.
//!
//! ```ignore
//! let upstream = StandIn::spawn().await;
//! upstream.set("conv_1", json!({"status": "in_progress"})).await;
//! // ... point the proxy at upstream.base_url() ...
//! assert_eq!(upstream.requests_for("conv_1").await, 1);
//! ```

// Each test uses only some of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// How long the stand-in may take to announce its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The start of the one line the stand-in prints on stdout.
const ANNOUNCEMENT: &str = "ayra-standin listening on ";

/// A running stand-in Ayra API on a free local port; killed when dropped.
pub struct StandIn {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    /// Its stderr lines so far, when started by [`StandIn::spawn_logging`].
    log: Option<Arc<Mutex<Vec<String>>>>,
}

/// What the stand-in has served, from `GET /_standin/stats`.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    /// Every `/v1/` request since start or the last reset.
    pub requests_total: u64,
    /// `GET`/`HEAD /v1/conversations/{id}` requests, by id.
    pub conversation_requests: HashMap<String, u64>,
    /// The last 200 `/v1/` requests, oldest first.
    pub requests: Vec<SeenRequest>,
    /// The most API requests the stand-in was answering at once.
    pub max_in_flight: u64,
}

/// When each API key called, from `GET /_standin/calls`.
#[derive(Debug, Clone, Deserialize)]
pub struct CallRecord {
    /// Each bearer token's calls, oldest first.
    pub calls: HashMap<String, Vec<Call>>,
    /// The time of this answer, on the calls' clock.
    pub now_ms: f64,
}

/// One API call in the record.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// Milliseconds since the stand-in started.
    pub at_ms: f64,
    /// The path called, without the query.
    pub path: String,
    /// 429 when a rate-limit knob refused it, else 0.
    pub limited: u16,
}

impl CallRecord {
    /// The call times of `token`, oldest first.
    pub fn times_of(&self, token: &str) -> Vec<f64> {
        let calls = self.calls.get(token).map(Vec::as_slice).unwrap_or_default();
        calls.iter().map(|call| call.at_ms).collect()
    }

    /// The calls of `token`, oldest first.
    pub fn of(&self, token: &str) -> &[Call] {
        self.calls.get(token).map(Vec::as_slice).unwrap_or_default()
    }
}

/// One `/v1/` request as the stand-in received it.
#[derive(Debug, Clone, Deserialize)]
pub struct SeenRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query, without `?` (empty when there was none).
    pub query: String,
    /// Every header as received, in order.
    pub headers: Vec<(String, String)>,
    /// Its `x-request-id`, as the stand-in's log line shows it.
    pub request_id: Option<String>,
    /// Its `traceparent`, as the stand-in's log line shows it.
    pub traceparent: Option<String>,
}

impl SeenRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl StandIn {
    /// Starts a stand-in with its defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with_args(&[]).await
    }

    /// Starts a stand-in with extra command-line arguments
    /// (e.g. `["--recording-ttl", "90s"]`).
    pub async fn spawn_with_args(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ayra-standin"));
        command.args(args).stderr(Stdio::inherit());
        Self::start(command).await
    }

    /// Starts a stand-in that logs each API request (`AYRA_STANDIN_LOG=info`)
    /// to a stderr this test reads: see [`StandIn::log_lines`].
    pub async fn spawn_logging() -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ayra-standin"));
        command
            .env("AYRA_STANDIN_LOG", "info")
            .stderr(Stdio::piped());
        let mut standin = Self::start(command).await;
        let stderr = standin.child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        standin.log = Some(lines);
        standin
    }

    /// The stderr lines logged so far (needs [`StandIn::spawn_logging`]).
    pub fn log_lines(&self) -> Vec<String> {
        let log = self.log.as_ref().expect("started by spawn_logging");
        log.lock().unwrap().clone()
    }

    async fn start(mut command: Command) -> Self {
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ayra-standin starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let base_url = match tokio::time::timeout(STARTUP_TIMEOUT, first_line).await {
            Ok(Ok(Ok(line))) if line.starts_with(ANNOUNCEMENT) => {
                line[ANNOUNCEMENT.len()..].trim().to_owned()
            }
            outcome => {
                // Reap the child: it is of no use without its address.
                let _ = child.kill();
                let _ = child.wait();
                panic!("ayra-standin did not announce its address: {outcome:?}");
            }
        };
        Self {
            child,
            base_url,
            http: reqwest::Client::new(),
            log: None,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Replaces the knobs of conversation `id` (see the stand-in's docs for
    /// the fields, e.g. `json!({"exists": false})`).
    pub async fn set(&self, id: &str, knobs: serde_json::Value) {
        let url = format!("{}/_standin/conversations/{id}", self.base_url);
        self.control(self.http.put(url).json(&knobs)).await;
    }

    /// Puts conversation `id` back to its default knobs.
    pub async fn clear(&self, id: &str) {
        let url = format!("{}/_standin/conversations/{id}", self.base_url);
        self.control(self.http.delete(url)).await;
    }

    /// Shifts the stand-in's clock (`Date`, `expires_at`) by `skew_ms`.
    pub async fn set_skew_ms(&self, skew_ms: i64) {
        let url = format!("{}/_standin/clock", self.base_url);
        let settings = serde_json::json!({ "skew_ms": skew_ms });
        self.control(self.http.put(url).json(&settings)).await;
    }

    /// Starts an outage: every conversation answers by `knobs` (e.g.
    /// `{"fail_status": 503}`) until [`StandIn::end_outage`].
    pub async fn start_outage(&self, knobs: serde_json::Value) {
        let url = format!("{}/_standin/outage", self.base_url);
        self.control(self.http.put(url).json(&knobs)).await;
    }

    /// Ends the outage: each conversation answers by its own knobs again.
    pub async fn end_outage(&self) {
        let url = format!("{}/_standin/outage", self.base_url);
        self.control(self.http.delete(url)).await;
    }

    /// Forgets all knobs, counters and logged requests, and the skew.
    pub async fn reset(&self) {
        let url = format!("{}/_standin/reset", self.base_url);
        self.control(self.http.post(url)).await;
    }

    /// Counters and the last requests received.
    pub async fn stats(&self) -> Stats {
        let url = format!("{}/_standin/stats", self.base_url);
        self.control(self.http.get(url))
            .await
            .json()
            .await
            .expect("stats are JSON")
    }

    /// Limits every API key to `rate` calls a second, `burst` at once;
    /// past it the stand-in answers `429` with `retry-after`.
    pub async fn set_rate_limit(&self, rate: f64, burst: u32) {
        let url = format!("{}/_standin/rate_limit", self.base_url);
        let limit = serde_json::json!({"rate": rate, "burst": burst});
        self.control(self.http.put(url).json(&limit)).await;
    }

    /// Answers the next `calls` calls of `key` with `429` and this `retry-after`.
    pub async fn throttle(&self, key: &str, calls: u32, retry_after: &str) {
        let url = format!("{}/_standin/throttle", self.base_url);
        let throttle = serde_json::json!({"calls": calls, "retry_after": retry_after, "key": key});
        self.control(self.http.put(url).json(&throttle)).await;
    }

    /// When each API key called.
    pub async fn calls(&self) -> CallRecord {
        let url = format!("{}/_standin/calls", self.base_url);
        self.control(self.http.get(url))
            .await
            .json()
            .await
            .expect("the call record is JSON")
    }

    /// How many conversation requests for `id` reached the stand-in.
    pub async fn requests_for(&self, id: &str) -> u64 {
        let stats = self.stats().await;
        stats.conversation_requests.get(id).copied().unwrap_or(0)
    }

    /// Sends a control request; panics, with the stand-in's answer, unless it succeeds.
    async fn control(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request.send().await.expect("the stand-in answers");
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            panic!("stand-in control request failed: {status} {body}");
        }
        response
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // The process may have died already; either way it is gone after this.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
