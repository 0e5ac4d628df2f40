//! Durations in the config file: humantime strings ("250ms", "10s", "1h"), read naming the key.

use std::time::Duration;

use super::ConfigError;

/// No duration in the config may exceed this (a year): larger values are typos,
/// and some would overflow the cache's and the runtime's clocks.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration of at most a year; zero allowed (it turns a feature off).
pub(super) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let value = humantime::parse_duration(text)
        .map_err(|e| ConfigError::invalid(key, format!("{text:?} is not a duration ({e})")))?;
    if value > MAX_DURATION {
        return Err(ConfigError::invalid(key, "must be at most a year"));
    }
    Ok(value)
}

/// A duration longer than zero and at most a year.
pub(super) fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let value = duration(key, text)?;
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than zero"));
    }
    Ok(value)
}
