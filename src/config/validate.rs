//! Turns the file's raw values into typed settings, naming the key of any bad value.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use http::{HeaderValue, Uri};

use crate::certificate::{self, PairError};
use crate::domain::Encoding;

use super::durations::{duration, positive_duration};
use super::raw::{RawSettings, RawSize};
use super::{
    AdminSettings, AuthSettings, CacheSettings, ConfigError, LogFormat, LogSettings, Secret,
    ServerSettings, Settings, TlsSettings, UpstreamSettings,
};

pub(super) fn settings(raw: RawSettings) -> Result<Settings, ConfigError> {
    let settings = Settings {
        server: ServerSettings {
            listen: raw.server.listen.parse::<SocketAddr>().map_err(|e| {
                ConfigError::invalid("server.listen", format!("not an IP:port address: {e}"))
            })?,
            header_read_timeout: positive_duration(
                "server.header_read_timeout",
                &raw.server.header_read_timeout,
            )?,
            max_request_body: request_body_size(&raw.server.max_request_body)?,
            idle_timeout: positive_duration("server.idle_timeout", &raw.server.idle_timeout)?,
            admin_listen: raw
                .server
                .admin_listen
                .as_deref()
                .map(|text| {
                    text.parse::<SocketAddr>().map_err(|e| {
                        ConfigError::invalid(
                            "server.admin_listen",
                            format!("not an IP:port address: {e}"),
                        )
                    })
                })
                .transpose()?,
            max_connections: at_least_one("server.max_connections", raw.server.max_connections)?,
            shutdown_grace: duration("server.shutdown_grace", &raw.server.shutdown_grace)?,
            h2_max_concurrent_streams: u32::try_from(at_least_one(
                "server.h2_max_concurrent_streams",
                raw.server.h2_max_concurrent_streams as usize,
            )?)
            .unwrap_or(u32::MAX),
            worker_threads: worker_threads(raw.server.worker_threads)?,
            tls: raw.server.tls.map(tls).transpose()?,
        },
        upstream: UpstreamSettings {
            base_url: base_url(&raw.upstream.base_url)?,
            timeout: positive_duration("upstream.timeout", &raw.upstream.timeout)?,
            connect_timeout: positive_duration(
                "upstream.connect_timeout",
                &raw.upstream.connect_timeout,
            )?,
            pool_idle_timeout: positive_duration(
                "upstream.pool_idle_timeout",
                &raw.upstream.pool_idle_timeout,
            )?,
            api_key: raw.upstream.api_key.as_deref().map(api_key).transpose()?,
            max_body: positive_size("upstream.max_body", &raw.upstream.max_body)?,
            max_concurrency: at_least_one(
                "upstream.max_concurrency",
                raw.upstream.max_concurrency,
            )?,
            budget: super::budget::settings(raw.upstream.budget)?,
        },
        cache: CacheSettings {
            max_bytes: positive_size("cache.max_bytes", &raw.cache.max_bytes)?,
            max_ttl: positive_duration("cache.max_ttl", &raw.cache.max_ttl)?,
            expiry_margin: duration("cache.expiry_margin", &raw.cache.expiry_margin)?,
            statuses: statuses(raw.cache.statuses)?,
            stale_if_error: duration("cache.stale_if_error", &raw.cache.stale_if_error)?,
            refresh_ahead: fraction("cache.refresh_ahead", raw.cache.refresh_ahead)?,
            in_progress_ttl: duration("cache.in_progress_ttl", &raw.cache.in_progress_ttl)?,
            not_found_ttl: duration("cache.not_found_ttl", &raw.cache.not_found_ttl)?,
            compression: encodings(&raw.cache.compression)?,
            snapshot_path: Some(raw.cache.snapshot_path)
                .filter(|path| !path.trim().is_empty())
                .map(PathBuf::from),
        },
        auth: AuthSettings {
            client_tokens_sha256: token_digests(&raw.auth.client_tokens_sha256)?,
            allow_anonymous: raw.auth.allow_anonymous,
        },
        admin: AdminSettings {
            token_sha256: raw
                .admin
                .token_sha256
                .as_deref()
                .map(|digest| sha256_digest("admin.token_sha256", digest))
                .transpose()?,
        },
        log: LogSettings {
            format: log_format(&raw.log.format)?,
            level: log_level(raw.log.level)?,
            summary_interval: Some(duration("log.summary_interval", &raw.log.summary_interval)?)
                .filter(|interval| !interval.is_zero()),
        },
        shared: raw.shared.map(super::shared::settings).transpose()?,
    };
    check_auth_mode(&settings)?;
    Ok(settings)
}

/// A proxy-held key without client tokens would serve anyone: refuse unless asked for.
fn check_auth_mode(settings: &Settings) -> Result<(), ConfigError> {
    let auth = &settings.auth;
    if settings.upstream.api_key.is_some()
        && auth.client_tokens_sha256.is_empty()
        && !auth.allow_anonymous
    {
        return Err(ConfigError::invalid(
            "auth.client_tokens_sha256",
            "upstream.api_key is set, so clients must authenticate: list their token digests \
             here, or set auth.allow_anonymous = true for a proxy only trusted callers can reach",
        ));
    }
    Ok(())
}

/// No count in the config may exceed this.
const MAX_COUNT: usize = 1_000_000;
/// More runtime threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

fn positive_size(key: &str, raw: &RawSize) -> Result<u64, ConfigError> {
    let bytes = match raw {
        RawSize::Bytes(bytes) => *bytes,
        RawSize::Text(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|e| ConfigError::invalid(key, format!("{text:?} is not a size ({e})")))?
            .as_u64(),
    };
    if bytes == 0 {
        return Err(ConfigError::invalid(key, "must be larger than zero"));
    }
    Ok(bytes)
}

/// Forwarded request bodies are held in memory whole: at most this each.
const MAX_REQUEST_BODY: u64 = 1 << 30;

fn request_body_size(raw: &RawSize) -> Result<u64, ConfigError> {
    const KEY: &str = "server.max_request_body";
    let bytes = positive_size(KEY, raw)?;
    if bytes > MAX_REQUEST_BODY {
        return Err(ConfigError::invalid(KEY, "must be at most 1 GiB"));
    }
    Ok(bytes)
}

fn encodings(names: &[String]) -> Result<Vec<Encoding>, ConfigError> {
    let mut encodings = Vec::new();
    for name in names {
        let encoding = Encoding::from_name(name.trim()).ok_or_else(|| {
            ConfigError::invalid(
                "cache.compression",
                format!("{name:?} is not one of \"br\", \"gzip\", \"zstd\""),
            )
        })?;
        if !encodings.contains(&encoding) {
            encodings.push(encoding);
        }
    }
    Ok(encodings)
}

/// The pair must load now: a bad certificate stops the start (or the
/// reload), naming the key. The parsed pair is what the listener serves.
fn tls(raw: super::raw::RawTls) -> Result<TlsSettings, ConfigError> {
    let cert_path = PathBuf::from(raw.cert_path);
    let key_path = PathBuf::from(raw.key_path);
    match certificate::load(&cert_path, &key_path) {
        Ok(pair) => Ok(TlsSettings {
            cert_path,
            key_path,
            pair,
        }),
        Err(error @ PairError::Key { .. }) => Err(ConfigError::invalid(
            "server.tls.key_path",
            error.to_string(),
        )),
        Err(error) => Err(ConfigError::invalid(
            "server.tls.cert_path",
            error.to_string(),
        )),
    }
}

fn fraction(key: &str, value: f64) -> Result<f64, ConfigError> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(key, "must be at least 0 and below 1"))
    }
}

/// `server.worker_threads`: 0 is one per CPU (like nginx's
/// `worker_processes auto`), else at most `MAX_WORKER_THREADS`.
fn worker_threads(value: usize) -> Result<Option<usize>, ConfigError> {
    if value > MAX_WORKER_THREADS {
        return Err(ConfigError::invalid(
            "server.worker_threads",
            format!("must be between 0 (one per CPU) and {MAX_WORKER_THREADS}"),
        ));
    }
    Ok((value > 0).then_some(value))
}

fn at_least_one(key: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 || value > MAX_COUNT {
        return Err(ConfigError::invalid(
            key,
            format!("must be between 1 and {MAX_COUNT}"),
        ));
    }
    Ok(value)
}

fn base_url(text: &str) -> Result<String, ConfigError> {
    const KEY: &str = "upstream.base_url";
    let uri: Uri = text
        .parse()
        .map_err(|e| ConfigError::invalid(KEY, format!("{text:?} is not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(ConfigError::invalid(
                KEY,
                "must start with http:// or https://",
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(ConfigError::invalid(KEY, "must name a host"));
    }
    if uri.query().is_some() {
        return Err(ConfigError::invalid(KEY, "must not carry a query"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn api_key(key: &str) -> Result<Secret, ConfigError> {
    const KEY: &str = "upstream.api_key";
    if key.is_empty() {
        return Err(ConfigError::invalid(KEY, "is empty"));
    }
    let value = HeaderValue::try_from(format!("Bearer {key}"))
        .map_err(|_| ConfigError::invalid(KEY, "contains characters a header cannot carry"))?;
    Ok(Secret::new(value))
}

fn statuses(statuses: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if statuses.is_empty() || statuses.iter().any(|s| s.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "cache.statuses",
            "list at least one conversation status, none empty",
        ));
    }
    Ok(statuses)
}

fn token_digests(digests: &[String]) -> Result<HashSet<[u8; 32]>, ConfigError> {
    digests
        .iter()
        .map(|digest| sha256_digest("auth.client_tokens_sha256", digest))
        .collect()
}

fn sha256_digest(key: &str, digest: &str) -> Result<[u8; 32], ConfigError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digest.trim(), &mut bytes)
        .map_err(|_| ConfigError::invalid(key, "a SHA-256 digest is 64 hex digits"))?;
    Ok(bytes)
}

fn log_format(text: &str) -> Result<LogFormat, ConfigError> {
    match text {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        other => Err(ConfigError::invalid(
            "log.format",
            format!("{other:?} is neither \"json\" nor \"pretty\""),
        )),
    }
}

fn log_level(level: String) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(&level)
        .map_err(|e| ConfigError::invalid("log.level", format!("{level:?}: {e}")))?;
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;
    use std::time::Duration;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(file.path(), Some(env))
    }

    fn key_of(error: ConfigError) -> String {
        match error {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected a key error, got {other}"),
        }
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.upstream.base_url, "https://api.ayra.ai");
        assert_eq!(s.upstream.timeout, Duration::from_secs(10));
        assert_eq!(s.upstream.max_body, 16 * 1024 * 1024);
        assert_eq!(s.upstream.max_concurrency, 256);
        assert_eq!(s.cache.max_bytes, 256 * 1024 * 1024);
        assert_eq!(s.cache.max_ttl, Duration::from_secs(3600));
        assert_eq!(s.cache.expiry_margin, Duration::from_secs(60));
        assert_eq!(s.cache.statuses, vec!["completed".to_string()]);
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.server.max_request_body, 1024 * 1024);
        assert_eq!(s.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.server.max_connections, 4096);
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.summary_interval, Some(Duration::from_secs(60)));
        assert_eq!(s.cache.stale_if_error, Duration::from_secs(3600));
        assert!((s.cache.refresh_ahead - 0.1).abs() < f64::EPSILON);
        assert_eq!(s.cache.in_progress_ttl, Duration::ZERO);
        assert_eq!(s.cache.not_found_ttl, Duration::ZERO);
        assert!(s.cache.snapshot_path.is_none());
        assert_eq!(s.cache.compression, [Encoding::Br, Encoding::Gzip]);
        assert!(s.server.admin_listen.is_none());
        assert!(s.admin.token_sha256.is_none());
        assert!(s.upstream.api_key.is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = load("[server]\nlistn = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        assert_eq!(key_of(error), "server.listn");
        let error = load("[serverx]\n", &[]).unwrap_err();
        assert_eq!(key_of(error), "serverx");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[upstream]\ntimeout = \"ten\"\n", "upstream.timeout"),
            ("[cache]\nmax_bytes = \"lots\"\n", "cache.max_bytes"),
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[upstream]\nbase_url = \"ftp://x\"\n", "upstream.base_url"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            (
                "[server]\nmax_connections = \"many\"\n",
                "server.max_connections",
            ),
            (
                "[auth]\nclient_tokens_sha256 = [\"abc\"]\n",
                "auth.client_tokens_sha256",
            ),
            ("[admin]\ntoken_sha256 = \"xyz\"\n", "admin.token_sha256"),
            (
                "[server]\nadmin_listen = \"nowhere\"\n",
                "server.admin_listen",
            ),
            (
                "[log]\nsummary_interval = \"often\"\n",
                "log.summary_interval",
            ),
            ("[cache]\nrefresh_ahead = 1.5\n", "cache.refresh_ahead"),
            ("[cache]\ncompression = [\"lzma\"]\n", "cache.compression"),
            ("[cache]\nmax_ttl = \"1000years\"\n", "cache.max_ttl"),
            (
                "[upstream]\nmax_concurrency = 3000000000000000000\n",
                "upstream.max_concurrency",
            ),
            (
                "[server]\nmax_connections = 2000000\n",
                "server.max_connections",
            ),
            (
                "[cache]\nstale_if_error = \"-1s\"\n",
                "cache.stale_if_error",
            ),
            (
                "[cache]\nin_progress_ttl = \"x\"\n",
                "cache.in_progress_ttl",
            ),
            ("[cache]\nnot_found_ttl = \"5\"\n", "cache.not_found_ttl"),
            (
                "[server]\nmax_request_body = \"2GiB\"\n",
                "server.max_request_body",
            ),
            (
                "[server]\nmax_request_body = 0\n",
                "server.max_request_body",
            ),
        ];
        for (toml, key) in cases {
            assert_eq!(key_of(load(toml, &[]).unwrap_err()), key, "{toml}");
        }
    }

    #[test]
    fn the_environment_overrides_the_file_and_keeps_keys_byte_exact() {
        let s = load(
            "[upstream]\ntimeout = \"5s\"\n[auth]\nallow_anonymous = true\n",
            &[
                ("AYRA_CACHE__UPSTREAM__TIMEOUT", "250ms"),
                ("AYRA_CACHE__UPSTREAM__API_KEY", "007"),
                ("AYRA_CACHE__SERVER__MAX_CONNECTIONS", "12"),
                ("AYRA_CACHE__CACHE__STATUSES", "completed,archived"),
            ],
        )
        .unwrap();
        assert_eq!(s.upstream.timeout, Duration::from_millis(250));
        let key = s.upstream.api_key.unwrap();
        assert_eq!(key.header_value().as_bytes(), b"Bearer 007");
        assert_eq!(s.server.max_connections, 12);
        assert_eq!(s.cache.statuses, vec!["completed", "archived"]);
    }

    #[test]
    fn an_unknown_environment_key_is_named() {
        let error = load("", &[("AYRA_CACHE__CACHE__MAX_TLL", "1s")]).unwrap_err();
        assert_eq!(key_of(error), "cache.max_tll");
    }

    #[test]
    fn a_proxy_key_without_client_tokens_is_refused() {
        let error = load("[upstream]\napi_key = \"sk_test\"\n", &[]).unwrap_err();
        assert_eq!(key_of(error), "auth.client_tokens_sha256");
        let digest = "a".repeat(64);
        let ok =
            format!("[upstream]\napi_key = \"k\"\n[auth]\nclient_tokens_sha256 = [\"{digest}\"]\n");
        assert_eq!(load(&ok, &[]).unwrap().auth.client_tokens_sha256.len(), 1);
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let s = load(
            "[upstream]\napi_key = \"sk_live_secret\"\n[auth]\nallow_anonymous = true\n",
            &[],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("sk_live_secret"));
    }

    #[test]
    fn sizes_accept_units_and_byte_counts() {
        let s = load(
            "[cache]\nmax_bytes = 1024\n[upstream]\nmax_body = \"1 MiB\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.cache.max_bytes, 1024);
        assert_eq!(s.upstream.max_body, 1024 * 1024);
    }
}
