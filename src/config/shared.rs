//! `[shared]`: the optional Redis tier replicas share, as written and as validated.

use std::fmt;
use std::time::Duration;

use super::durations::positive_duration;
use super::raw::RawShared;
use super::ConfigError;

/// The validated `[shared]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// `redis://` or `rediss://`; may hold a password, so never printed.
    pub redis_url: String,
    /// `redis_url` is a seed node of a Redis Cluster.
    pub cluster: bool,
    pub key_prefix: String,
    /// Bound on every Redis operation; past it the proxy acts as if alone.
    pub timeout: Duration,
    /// How long one replica's claim on a key's fetch lasts at most.
    pub lock_ttl: Duration,
    /// AES-256-GCM key sealing every value; none: values are stored in clear.
    pub encryption_key: Option<[u8; 32]>,
}

impl fmt::Debug for SharedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSettings")
            .field("redis_url", &"[redacted]")
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("lock_ttl", &self.lock_ttl)
            .field("encryption_key", &self.encryption_key.map(|_| "[redacted]"))
            .finish()
    }
}

/// No key prefix may be longer than this.
const MAX_PREFIX: usize = 64;

pub(super) fn settings(raw: RawShared) -> Result<SharedSettings, ConfigError> {
    let timeout = positive_duration("shared.timeout", &raw.timeout)?;
    let lock_ttl = positive_duration("shared.lock_ttl", &raw.lock_ttl)?;
    if lock_ttl <= timeout {
        return Err(ConfigError::invalid(
            "shared.lock_ttl",
            "must be longer than shared.timeout",
        ));
    }
    Ok(SharedSettings {
        redis_url: redis_url(&raw.redis_url, raw.cluster)?,
        cluster: raw.cluster,
        key_prefix: key_prefix(raw.key_prefix)?,
        timeout,
        lock_ttl,
        encryption_key: raw.encryption_key.as_deref().map(aes_key).transpose()?,
    })
}

/// Parsed by the Redis client itself, so what passes here is what it connects to.
fn redis_url(text: &str, cluster: bool) -> Result<String, ConfigError> {
    let key = "shared.redis_url";
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::invalid(key, "required when [shared] is set"));
    }
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err(ConfigError::invalid(
            key,
            "must start with redis:// or rediss://",
        ));
    }
    // The client's message may quote the URL, password and all: say only what failed.
    let info = redis::IntoConnectionInfo::into_connection_info(text)
        .map_err(|_| ConfigError::invalid(key, "not a Redis URL the client can use"))?;
    if cluster && info.redis_settings().db() != 0 {
        return Err(ConfigError::invalid(
            key,
            "a Redis Cluster has only database 0",
        ));
    }
    Ok(text.to_owned())
}

/// 32 bytes as 64 hex digits; the value itself never appears in an error.
fn aes_key(text: &str) -> Result<[u8; 32], ConfigError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        ConfigError::invalid(
            "shared.encryption_key",
            "an AES-256 key is 64 hex digits (e.g. from `openssl rand -hex 32`)",
        )
    })?;
    Ok(key)
}

fn key_prefix(prefix: String) -> Result<String, ConfigError> {
    let key = "shared.key_prefix";
    if prefix.len() > MAX_PREFIX {
        return Err(ConfigError::invalid(
            key,
            format!("at most {MAX_PREFIX} bytes"),
        ));
    }
    if prefix
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'{' || b == b'}')
    {
        return Err(ConfigError::invalid(
            key,
            "printable ASCII only, without spaces or braces (braces pick a cluster slot)",
        ));
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawShared {
        RawShared {
            redis_url: url.into(),
            ..RawShared::default()
        }
    }

    fn key_of(result: Result<SharedSettings, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let settings = settings(raw("redis://127.0.0.1:6379/0")).unwrap();
        assert_eq!(settings.key_prefix, "ayra-cache:");
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.lock_ttl, Duration::from_secs(15));
        assert!(!settings.cluster && settings.encryption_key.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key_of(settings(raw(""))), "shared.redis_url");
        assert_eq!(key_of(settings(raw("http://x:6379"))), "shared.redis_url");
        assert_eq!(
            key_of(settings(raw("redis://:pw@h:notaport"))),
            "shared.redis_url"
        );
        let cluster_db = RawShared {
            cluster: true,
            ..raw("redis://h:6379/3")
        };
        assert_eq!(key_of(settings(cluster_db)), "shared.redis_url");
        let prefix = RawShared {
            key_prefix: "a{b}".into(),
            ..raw("redis://h")
        };
        assert_eq!(key_of(settings(prefix)), "shared.key_prefix");
        let lock = RawShared {
            lock_ttl: "50ms".into(),
            ..raw("redis://h")
        };
        assert_eq!(key_of(settings(lock)), "shared.lock_ttl");
        let sealing = RawShared {
            encryption_key: Some("abc".into()),
            ..raw("redis://h")
        };
        assert_eq!(key_of(settings(sealing)), "shared.encryption_key");
    }

    #[test]
    fn a_url_error_never_repeats_the_password() {
        let error = settings(raw("redis://:hunter2@h:notaport")).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        let ok = settings(raw("redis://:hunter2@h:6379")).unwrap();
        assert!(!format!("{ok:?}").contains("hunter2"));
    }
}
