//! The storing decision and the lifetime arithmetic: pure, with the receive time passed in.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use headers::{CacheControl, HeaderMapExt};
use http::{header, HeaderMap, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::config::CacheSettings;
use crate::domain::Flags;

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
    /// A purge of this conversation, or a newer answer, came while it was fetched.
    Superseded,
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
            NoStoreReason::Superseded => "superseded",
        }
    }
}

/// What kind of answer an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A final conversation: refreshed ahead, may stand in when the upstream fails.
    Complete,
    /// A live call or pending analytics, micro-cached for `in_progress_ttl`.
    Provisional,
    /// A 404 `conversation_not_found`, remembered for `not_found_ttl`.
    NotFound,
}

/// An entry's life, counted from the moment its answer was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub kind: EntryKind,
    /// Served as a plain HIT until then.
    pub fresh_for: Duration,
    /// Kept, and may stand in for a failing upstream, until then.
    pub usable_for: Duration,
    /// When the recording URL inside dies, less the margin (none without a URL).
    pub hard_in: Option<Duration>,
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

/// The storing rules of SPEC sections 4 and 8, with their settings.
#[derive(Debug, Clone)]
pub struct StorePolicy {
    pub max_ttl: Duration,
    pub expiry_margin: Duration,
    pub statuses: Vec<String>,
    pub stale_if_error: Duration,
    pub in_progress_ttl: Duration,
    pub not_found_ttl: Duration,
}

impl StorePolicy {
    /// The policy the cache settings describe.
    pub fn from_settings(settings: &CacheSettings) -> StorePolicy {
        StorePolicy {
            max_ttl: settings.max_ttl,
            expiry_margin: settings.expiry_margin,
            statuses: settings.statuses.clone(),
            stale_if_error: settings.stale_if_error,
            in_progress_ttl: settings.in_progress_ttl,
            not_found_ttl: settings.not_found_ttl,
        }
    }

    /// Store the answer, and for how long, or why not.
    pub fn decide(&self, answer: &Answer<'_>) -> Result<Lifetime, NoStoreReason> {
        if answer.status == StatusCode::NOT_FOUND {
            return self.not_found(answer);
        }
        if answer.status != StatusCode::OK {
            return Err(NoStoreReason::Status(answer.status));
        }
        refuse_no_store(answer.headers)?;
        let envelope: Envelope<'_> =
            serde_json::from_slice(answer.body).map_err(|_| NoStoreReason::UnreadableBody)?;
        let data = envelope.data;
        let incomplete = self.incompleteness(&data, answer.flags);
        if let Some(reason) = incomplete {
            if self.in_progress_ttl.is_zero() {
                return Err(reason);
            }
        }
        let hard_in = self.url_deadline(data.recording, answer)?;
        let within_url = |duration: Duration| hard_in.map_or(duration, |hard| duration.min(hard));
        Ok(match incomplete {
            None => {
                let fresh_for = within_url(self.max_ttl);
                Lifetime {
                    kind: EntryKind::Complete,
                    fresh_for,
                    usable_for: within_url(fresh_for.saturating_add(self.stale_if_error)),
                    hard_in,
                }
            }
            Some(_) => {
                let fresh_for = within_url(self.in_progress_ttl);
                Lifetime {
                    kind: EntryKind::Provisional,
                    fresh_for,
                    usable_for: fresh_for,
                    hard_in,
                }
            }
        })
    }

    /// Why a readable 200 is not final yet, if it is not.
    fn incompleteness(&self, data: &Data<'_>, flags: Flags) -> Option<NoStoreReason> {
        let status = data.status.as_deref().unwrap_or_default();
        if !self.statuses.iter().any(|s| s == status) {
            Some(NoStoreReason::InProgress)
        } else if flags.analytics && data.analytics.is_none() {
            Some(NoStoreReason::AnalyticsPending)
        } else {
            None
        }
    }

    /// Time from receipt until the recording URL's deadline (none without a URL).
    fn url_deadline(
        &self,
        recording: Option<Recording<'_>>,
        answer: &Answer<'_>,
    ) -> Result<Option<Duration>, NoStoreReason> {
        let Some(recording) = recording.filter(|r| r.url.is_some()) else {
            return Ok(None);
        };
        let expires_at = recording
            .expires_at
            .as_deref()
            .and_then(parse_rfc3339)
            .ok_or(NoStoreReason::MissingExpiry)?;
        let signed_at = upstream_date(answer.headers)
            .map(|date| date + DATE_RESOLUTION)
            .unwrap_or(answer.received);
        let life = expires_at
            .duration_since(signed_at)
            .unwrap_or(Duration::ZERO)
            .saturating_sub(self.expiry_margin);
        if life.is_zero() {
            return Err(NoStoreReason::LifetimeTooShort);
        }
        Ok(Some(life))
    }

    /// A 404 is remembered only when asked for, and only for a missing conversation.
    fn not_found(&self, answer: &Answer<'_>) -> Result<Lifetime, NoStoreReason> {
        let refused = NoStoreReason::Status(StatusCode::NOT_FOUND);
        if self.not_found_ttl.is_zero() {
            return Err(refused);
        }
        refuse_no_store(answer.headers)?;
        let error: ErrorEnvelope<'_> = serde_json::from_slice(answer.body).map_err(|_| refused)?;
        if error.error.code.as_deref() != Some("conversation_not_found") {
            return Err(refused);
        }
        Ok(Lifetime {
            kind: EntryKind::NotFound,
            fresh_for: self.not_found_ttl,
            usable_for: self.not_found_ttl,
            hard_in: None,
        })
    }
}

/// `no-store` or `private` in any `Cache-Control` header, in any case, with
/// or without arguments, forbids storing. A header that does not parse as a
/// list of directives forbids it too: when unsure, do not store.
fn refuse_no_store(headers: &HeaderMap) -> Result<(), NoStoreReason> {
    let values = headers.get_all(header::CACHE_CONTROL);
    if values.iter().next().is_none() {
        return Ok(());
    }
    if values
        .iter()
        .any(|value| value.to_str().map_or(true, forbids_storing))
    {
        return Err(NoStoreReason::NoStore);
    }
    match headers.typed_get::<CacheControl>() {
        Some(_) => Ok(()),
        None => Err(NoStoreReason::NoStore),
    }
}

fn forbids_storing(value: &str) -> bool {
    value.split(',').any(|directive| {
        let name = directive.split(['=', ';']).next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
    })
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

/// The API's error body, as far as the policy reads it.
#[derive(Deserialize)]
struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    error: ErrorBody<'a>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
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
