//! The storing decision and the lifetime arithmetic: pure, with the receive time passed in.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use headers::{CacheControl, HeaderMapExt};
use http::{header, HeaderMap, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::key::Flags;
use crate::config::CacheSettings;

/// Why an upstream answer was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    /// Not a 200.
    Status(StatusCode),
    /// The upstream said `Cache-Control: no-store`.
    NoStore,
    /// The body is not the JSON shape the API documents.
    UnreadableBody,
    /// `data.status` is not one of `cache.statuses` (the call is still live).
    InProgress,
    /// Analytics were asked for and are still being computed.
    AnalyticsPending,
    /// A recording URL without a readable `expires_at`.
    MissingExpiry,
    /// The recording URL dies before the entry would be worth keeping.
    LifetimeTooShort,
}

impl NoStoreReason {
    /// The name used in `cache-status`, the access log and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStoreReason::Status(_) => "status",
            NoStoreReason::NoStore => "no_store",
            NoStoreReason::UnreadableBody => "unreadable_body",
            NoStoreReason::InProgress => "in_progress",
            NoStoreReason::AnalyticsPending => "analytics_pending",
            NoStoreReason::MissingExpiry => "missing_expiry",
            NoStoreReason::LifetimeTooShort => "lifetime_too_short",
        }
    }
}

/// How long a stored answer may be served, counted from its receive time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub fresh_for: Duration,
}

/// What one upstream answer looked like, as far as the policy cares.
pub struct Answer<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub flags: Flags,
    /// Local wall-clock time the answer was received.
    pub received: SystemTime,
}

/// The storing rules of SPEC section 4, with their settings.
#[derive(Debug, Clone)]
pub struct StorePolicy {
    pub max_ttl: Duration,
    pub expiry_margin: Duration,
    pub statuses: Vec<String>,
}

impl StorePolicy {
    /// The policy the cache settings describe.
    pub fn from_settings(settings: &CacheSettings) -> StorePolicy {
        StorePolicy {
            max_ttl: settings.max_ttl,
            expiry_margin: settings.expiry_margin,
            statuses: settings.statuses.clone(),
        }
    }

    /// Store the answer, and for how long, or why not.
    pub fn decide(&self, answer: &Answer<'_>) -> Result<Lifetime, NoStoreReason> {
        if answer.status != StatusCode::OK {
            return Err(NoStoreReason::Status(answer.status));
        }
        if let Some(cache_control) = answer.headers.typed_get::<CacheControl>() {
            if cache_control.no_store() {
                return Err(NoStoreReason::NoStore);
            }
        }
        let envelope: Envelope<'_> =
            serde_json::from_slice(answer.body).map_err(|_| NoStoreReason::UnreadableBody)?;
        let data = envelope.data;
        let status = data.status.as_deref().unwrap_or_default();
        if !self.statuses.iter().any(|s| s == status) {
            return Err(NoStoreReason::InProgress);
        }
        if answer.flags.analytics && data.analytics.is_none() {
            return Err(NoStoreReason::AnalyticsPending);
        }
        let recording = data.recording.filter(|r| r.url.is_some());
        let fresh_for = match recording {
            None => self.max_ttl,
            Some(recording) => {
                let expires_at = recording
                    .expires_at
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .ok_or(NoStoreReason::MissingExpiry)?;
                let signed_at = upstream_date(answer.headers)
                    .map(|date| date + DATE_RESOLUTION)
                    .unwrap_or(answer.received);
                self.url_lifetime(expires_at, signed_at).min(self.max_ttl)
            }
        };
        if fresh_for.is_zero() {
            return Err(NoStoreReason::LifetimeTooShort);
        }
        Ok(Lifetime { fresh_for })
    }

    /// `expires_at - signed_at - expiry_margin`, or zero when that is not positive.
    fn url_lifetime(&self, expires_at: SystemTime, signed_at: SystemTime) -> Duration {
        expires_at
            .duration_since(signed_at)
            .unwrap_or(Duration::ZERO)
            .saturating_sub(self.expiry_margin)
    }
}

/// `Date` has one-second resolution: the answer may have been signed up to
/// this much after the instant it names, so the URL's life is counted from
/// the end of that second.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// The upstream's `Date`: the clock that signed the recording URL.
fn upstream_date(headers: &HeaderMap) -> Option<SystemTime> {
    let value = headers.get(header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// The part of the API's 200 body the policy reads.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    analytics: Option<IgnoredAny>,
    #[serde(borrow, default)]
    recording: Option<Recording<'a>>,
}

#[derive(Deserialize)]
struct Recording<'a> {
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient_text")]
    expires_at: Option<String>,
}

/// Reads a string, and anything else as "no readable value" rather than a bad body.
fn lenient_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(text) => Some(text),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
