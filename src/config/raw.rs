//! The config file's shape as written, with its defaults, before validation.
//!
//! Every section denies unknown keys so a typo stops the start instead of
//! being silently ignored. Durations and sizes stay strings here; `validate`
//! parses them and names the key when one is wrong.

use serde::Deserialize;

use super::budget::RawBudget;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSettings {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub cache: RawCache,
    pub auth: RawAuth,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub shared: Option<RawShared>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: String,
    pub admin_listen: Option<String>,
    pub header_read_timeout: String,
    pub max_request_body: RawSize,
    pub idle_timeout: String,
    pub max_connections: usize,
    pub shutdown_grace: String,
    pub h2_max_concurrent_streams: u32,
    pub worker_threads: usize,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert_path: String,
    pub key_path: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            header_read_timeout: "10s".into(),
            max_request_body: RawSize::Text("1MiB".into()),
            idle_timeout: "60s".into(),
            max_connections: 4096,
            shutdown_grace: "30s".into(),
            h2_max_concurrent_streams: 100,
            worker_threads: 0,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub base_url: String,
    pub timeout: String,
    pub connect_timeout: String,
    pub pool_idle_timeout: String,
    pub api_key: Option<String>,
    pub max_body: RawSize,
    pub max_concurrency: usize,
    pub budget: RawBudget,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            base_url: "https://api.ayra.ai".into(),
            timeout: "10s".into(),
            connect_timeout: "3s".into(),
            pool_idle_timeout: "90s".into(),
            api_key: None,
            max_body: RawSize::Text("16MiB".into()),
            max_concurrency: 256,
            budget: RawBudget::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    pub max_bytes: RawSize,
    pub max_ttl: String,
    pub expiry_margin: String,
    #[serde(deserialize_with = "list")]
    pub statuses: Vec<String>,
    pub stale_if_error: String,
    pub refresh_ahead: f64,
    pub in_progress_ttl: String,
    pub not_found_ttl: String,
    pub snapshot_path: String,
    #[serde(deserialize_with = "list")]
    pub compression: Vec<String>,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_bytes: RawSize::Text("256MiB".into()),
            max_ttl: "1h".into(),
            expiry_margin: "60s".into(),
            statuses: vec!["completed".into()],
            stale_if_error: "1h".into(),
            refresh_ahead: 0.1,
            in_progress_ttl: "0s".into(),
            not_found_ttl: "0s".into(),
            snapshot_path: String::new(),
            compression: vec!["br".into(), "gzip".into()],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    #[serde(deserialize_with = "list")]
    pub client_tokens_sha256: Vec<String>,
    pub allow_anonymous: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub token_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub format: String,
    pub level: String,
    pub summary_interval: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "json".into(),
            level: "info".into(),
            summary_interval: "60s".into(),
        }
    }
}

/// A size as written: a byte count, or a string such as "256MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// A list as written in TOML, or as a comma-separated environment value.
///
/// The `config` crate only splits environment lists when it also guesses
/// types for every variable, which would turn an API key like "007" into 7.
fn list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Written::deserialize(deserializer)? {
        Written::List(items) => items,
        Written::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `[shared]` as written; absent: each proxy caches alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawShared {
    pub redis_url: String,
    pub cluster: bool,
    pub key_prefix: String,
    pub timeout: String,
    pub lock_ttl: String,
    pub encryption_key: Option<String>,
}

impl Default for RawShared {
    fn default() -> Self {
        RawShared {
            redis_url: String::new(),
            cluster: false,
            key_prefix: "ayra-cache:".into(),
            timeout: "100ms".into(),
            lock_ttl: "15s".into(),
            encryption_key: None,
        }
    }
}
