//! Settings: one TOML file plus `AYRA_CACHE__SECTION__KEY` overrides, validated once at start.
//!
//! [`Settings::load`] reads and validates; every error names the key at fault
//! so an operator can fix the file without reading code.

mod budget;
mod durations;
mod raw;
mod shared;
mod validate;

pub use budget::BudgetSettings;
pub use shared::SharedSettings;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::sign::CertifiedKey;

use crate::domain::Encoding;

use raw::RawSettings;

/// The prefix of environment overrides: `AYRA_CACHE__UPSTREAM__API_KEY`.
pub const ENV_PREFIX: &str = "AYRA_CACHE";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable, or not TOML.
    #[error("cannot read config: {0}")]
    Read(String),
    /// A key is unknown, or its value is of the wrong type or out of range.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A secret value: never printed by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(HeaderValue);

impl Secret {
    /// Wraps a header value, marking it sensitive.
    pub fn new(mut value: HeaderValue) -> Secret {
        value.set_sensitive(true);
        Secret(value)
    }

    /// The value as an HTTP header value, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The validated settings the proxy runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub cache: CacheSettings,
    pub auth: AuthSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    /// The Redis tier replicas share; none: this proxy caches alone.
    pub shared: Option<SharedSettings>,
}

/// `[server]`: the client-facing listener and its limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// The operators' listener (metrics, stats, purge); none when unset.
    pub admin_listen: Option<SocketAddr>,
    pub header_read_timeout: Duration,
    /// Largest forwarded request body, read whole before it goes upstream.
    pub max_request_body: u64,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// Worker threads serving connections, a runtime each; none: one per CPU.
    pub worker_threads: Option<usize>,
    /// TLS on the public listener; none: cleartext.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`: the PEM certificate chain and private key, and the pair
/// parsed from them when the settings were validated.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub pair: Arc<CertifiedKey>,
}

/// `[upstream]`: where and how the Ayra API is called.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Scheme, authority and optional path prefix, without a trailing `/`.
    pub base_url: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// `Authorization` value (`Bearer <key>`) the proxy sends in place of the client's.
    pub api_key: Option<Secret>,
    pub max_body: u64,
    pub max_concurrency: usize,
    /// `[upstream.budget]`: the pace of upstream calls per upstream credential.
    pub budget: BudgetSettings,
}

/// `[cache]`: bounds and lifetimes of stored conversations.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub max_bytes: u64,
    pub max_ttl: Duration,
    pub expiry_margin: Duration,
    /// `data.status` values that may be stored.
    pub statuses: Vec<String>,
    /// How long past its fresh life an entry may stand in for a failing upstream.
    pub stale_if_error: Duration,
    /// Fraction of the fresh life, at its end, in which a HIT starts a refresh (0: off).
    pub refresh_ahead: f64,
    /// Micro-caching of live conversations (zero: off).
    pub in_progress_ttl: Duration,
    /// Micro-caching of 404 `conversation_not_found` (zero: off).
    pub not_found_ttl: Duration,
    /// Where the cache is written on shutdown and read at start (none: off).
    pub snapshot_path: Option<PathBuf>,
    /// Content codings offered, in order of preference (empty: off).
    pub compression: Vec<Encoding>,
}

/// `[auth]`: who may use the proxy when it holds the API key.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// SHA-256 digests of the bearer tokens clients may present.
    pub client_tokens_sha256: HashSet<[u8; 32]>,
    pub allow_anonymous: bool,
}

/// `[admin]`: who may use the admin routes.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// SHA-256 digest of the admin bearer token; none disables `/admin/`.
    pub token_sha256: Option<[u8; 32]>,
}

/// `[log]`: format and filter of the log output.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `ayra_cache=debug`.
    pub level: String,
    /// How often the summary event is logged; none when `"0s"`.
    pub summary_interval: Option<Duration>,
}

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Settings {
    /// Reads `path`, applies `AYRA_CACHE__*` variables from the process environment, validates.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// As [`Settings::load`], taking the environment from `env` when given (for tests).
    pub fn load_with_env(
        path: &Path,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Read(format!(
                "{} is not a readable file",
                path.display()
            )));
        }
        // Values stay strings (no type guessing): keys must arrive byte-exact.
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false)
            .source(env);
        let raw: RawSettings = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(describe)?
            .try_deserialize()
            .map_err(describe)?;
        validate::settings(raw)
    }
}

/// Turns the `config` crate's error into ours, keeping the key it names.
fn describe(error: config::ConfigError) -> ConfigError {
    describe_at(error, None)
}

fn describe_at(error: config::ConfigError, parent: Option<String>) -> ConfigError {
    match error {
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => ConfigError::Invalid {
            key: key.or(parent).unwrap_or_default(),
            message: format!("expected {expected}, found {unexpected}"),
        },
        config::ConfigError::At { error, key, .. } => describe_at(*error, key.or(parent)),
        config::ConfigError::Message(message) => match (unknown_field(&message), parent) {
            (Some(field), Some(section)) => {
                ConfigError::invalid(&format!("{section}.{field}"), "unknown key")
            }
            (Some(field), None) => ConfigError::invalid(&field, "unknown key"),
            (None, Some(key)) => ConfigError::Invalid { key, message },
            (None, None) => ConfigError::Read(message),
        },
        other => ConfigError::Read(other.to_string()),
    }
}

/// serde reports an unknown key as "unknown field `name`, expected ...".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}
