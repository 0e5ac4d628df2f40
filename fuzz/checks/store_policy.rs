//! The storing decision and lifetime arithmetic over arbitrary answers:
//! JSON bodies (raw bytes, or shaped like the API's with arbitrary values in
//! every field), `Date` headers and `expires_at` strings (arbitrary text, or
//! well-formed instants around a fixed "now"), statuses, `Cache-Control`,
//! flags and policy settings.
//!
//! Checks: no panic; the same answer twice; and when an answer is stored,
//! its times keep every bound of SPEC sections 4 and 8:
//! fresh <= max_ttl (or the micro-caching TTL), fresh <= usable <= fresh +
//! stale_if_error, fresh and usable within the URL deadline, and the deadline
//! never past `expires_at - (Date + 1 s) - expiry_margin` (`Date` is read as
//! the end of its second; the receive time stands in without one).

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use ayra_cache::cache::policy::{Answer, EntryKind, NoStoreReason, StorePolicy};
use ayra_cache::domain::Flags;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};

/// 2026-01-01T00:00:00Z: the receive times and instants are drawn around it.
const BASE_SECS: i64 = 1_767_225_600;

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Text(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (key.clone(), value.value()))
                    .collect(),
            ),
        }
    }
}

/// An instant as text: anything, or a well-formed one near `BASE_SECS`.
#[derive(Debug, Arbitrary)]
enum Instant {
    Raw(String),
    /// Milliseconds from the base, written as RFC 3339 (`expires_at`) or an HTTP date.
    Offset(i64),
    /// The same, with a numeric UTC offset in minutes (RFC 3339 only).
    Zoned(i64, i16),
}

impl Instant {
    fn rfc3339(&self) -> String {
        match self {
            Instant::Raw(text) => text.clone(),
            Instant::Offset(ms) => timestamp(*ms).map_or_else(|| ms.to_string(), |t| t.to_string()),
            Instant::Zoned(ms, minutes) => {
                let offset = jiff::tz::Offset::from_seconds(i32::from(*minutes) * 60)
                    .unwrap_or(jiff::tz::Offset::UTC);
                timestamp(*ms).map_or_else(
                    || ms.to_string(),
                    |t| {
                        t.to_zoned(jiff::tz::TimeZone::fixed(offset))
                            .timestamp()
                            .to_string()
                    },
                )
            }
        }
    }

    fn http_date(&self) -> String {
        match self {
            Instant::Raw(text) => text.clone(),
            Instant::Offset(ms) | Instant::Zoned(ms, _) => base()
                .checked_add(Duration::from_millis(ms.unsigned_abs()))
                .filter(|_| *ms >= 0)
                .or_else(|| base().checked_sub(Duration::from_millis(ms.unsigned_abs())))
                .filter(|at| *at >= SystemTime::UNIX_EPOCH && *at < max_http_date())
                .map_or_else(|| ms.to_string(), httpdate::fmt_http_date),
        }
    }
}

fn timestamp(ms: i64) -> Option<jiff::Timestamp> {
    let millis = BASE_SECS.checked_mul(1000)?.checked_add(ms)?;
    jiff::Timestamp::from_millisecond(millis).ok()
}

fn base() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(BASE_SECS as u64)
}

fn max_http_date() -> SystemTime {
    // 9999-12-31T23:59:59Z: httpdate formats nothing later.
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

#[derive(Debug, Arbitrary)]
enum Recording {
    Absent,
    Null,
    Fields {
        url: Option<Json>,
        expires_at: Option<Instant>,
        expires_at_other: Option<Json>,
        extra: Vec<(String, Json)>,
    },
    Other(Json),
}

#[derive(Debug, Arbitrary)]
enum Body {
    Raw(Vec<u8>),
    Shaped {
        status: Option<Json>,
        completed: bool,
        analytics: Option<Json>,
        recording: Recording,
        extra_data: Vec<(String, Json)>,
        extra_top: Vec<(String, Json)>,
    },
    NotFound {
        code: Option<Json>,
        missing: bool,
    },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Raw(bytes) => bytes.clone(),
            Body::Shaped {
                status,
                completed,
                analytics,
                recording,
                extra_data,
                extra_top,
            } => {
                let mut data: Map<String, Value> = extra_data
                    .iter()
                    .map(|(key, value)| (key.clone(), value.value()))
                    .collect();
                let status = match status {
                    None if *completed => Value::from("completed"),
                    None => Value::from("in_progress"),
                    Some(other) => other.value(),
                };
                data.insert("status".into(), status);
                if let Some(analytics) = analytics {
                    data.insert("analytics".into(), analytics.value());
                }
                match recording {
                    Recording::Absent => {}
                    Recording::Null => {
                        data.insert("recording".into(), Value::Null);
                    }
                    Recording::Fields {
                        url,
                        expires_at,
                        expires_at_other,
                        extra,
                    } => {
                        let mut fields: Map<String, Value> = extra
                            .iter()
                            .map(|(key, value)| (key.clone(), value.value()))
                            .collect();
                        let url = url
                            .as_ref()
                            .map_or(Value::from("https://r.example/x.mp3"), Json::value);
                        fields.insert("url".into(), url);
                        if let Some(at) = expires_at {
                            fields.insert("expires_at".into(), Value::from(at.rfc3339()));
                        } else if let Some(other) = expires_at_other {
                            fields.insert("expires_at".into(), other.value());
                        }
                        data.insert("recording".into(), Value::Object(fields));
                    }
                    Recording::Other(other) => {
                        data.insert("recording".into(), other.value());
                    }
                }
                let mut top: Map<String, Value> = extra_top
                    .iter()
                    .map(|(key, value)| (key.clone(), value.value()))
                    .collect();
                top.insert("data".into(), Value::Object(data));
                serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
            }
            Body::NotFound { code, missing } => {
                let code = match code {
                    None if *missing => Value::from("conversation_not_found"),
                    None => Value::from("not_found"),
                    Some(other) => other.value(),
                };
                serde_json::to_vec(&serde_json::json!({
                    "error": {"type": "not_found", "message": "x", "code": code}
                }))
                .unwrap_or_default()
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Status {
    Ok,
    NotFound,
    Other(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    status: Status,
    date: Option<Instant>,
    raw_headers: Vec<(u8, Vec<u8>)>,
    cache_control: Option<String>,
    body: Body,
    flags: (bool, bool, bool),
    received_offset_ms: i32,
    max_ttl_s: u32,
    expiry_margin_s: u32,
    stale_if_error_s: u32,
    in_progress_ms: u32,
    not_found_ms: u32,
    extra_status: Option<String>,
}

fn headers(input: &Input) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(date) = &input.date {
        if let Ok(value) = HeaderValue::from_str(&date.http_date()) {
            headers.append(header::DATE, value);
        }
    }
    if let Some(cache_control) = &input.cache_control {
        if let Ok(value) = HeaderValue::from_str(cache_control) {
            headers.append(header::CACHE_CONTROL, value);
        }
    }
    // A few more raw values for the headers the policy reads.
    for (which, value) in &input.raw_headers {
        let name = match which % 3 {
            0 => header::DATE,
            1 => header::CACHE_CONTROL,
            _ => header::AGE,
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    headers
}

/// What the stored lifetime may not exceed, read independently of the policy:
/// `expires_at - (Date + 1 s) - margin`, or `None` when the body has no URL.
fn url_bound(
    headers: &HeaderMap,
    body: &[u8],
    received: SystemTime,
    margin: Duration,
) -> Option<Duration> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let recording = value.get("data")?.get("recording")?;
    recording.get("url")?.as_str()?;
    let expires_at: jiff::Timestamp = recording.get("expires_at")?.as_str()?.parse().ok()?;
    let expires_at = SystemTime::from(expires_at);
    let signed_at = headers
        .get(header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| httpdate::parse_http_date(text).ok())
        .map_or(received, |date| date + Duration::from_secs(1));
    Some(
        expires_at
            .duration_since(signed_at)
            .unwrap_or(Duration::ZERO)
            .saturating_sub(margin),
    )
}

/// `STORE_POLICY_TRACE=1`: print each decision (to see what a corpus reaches:
/// `cargo +nightly fuzz run store_policy corpus/store_policy -- -runs=0`).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("STORE_POLICY_TRACE").is_some())
}

/// Checks one input: the fuzzer's bytes, read as an [`Input`] the way
/// libFuzzer's `fuzz_target!` reads a structured input.
pub fn check(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    check_input(input);
}

fn check_input(input: Input) {
    let mut statuses = vec!["completed".to_owned()];
    statuses.extend(input.extra_status.clone());
    let policy = StorePolicy {
        max_ttl: Duration::from_secs(input.max_ttl_s.into()),
        expiry_margin: Duration::from_secs(input.expiry_margin_s.into()),
        statuses,
        stale_if_error: Duration::from_secs(input.stale_if_error_s.into()),
        in_progress_ttl: Duration::from_millis(input.in_progress_ms.into()),
        not_found_ttl: Duration::from_millis(input.not_found_ms.into()),
    };
    let status = match input.status {
        Status::Ok => StatusCode::OK,
        Status::NotFound => StatusCode::NOT_FOUND,
        Status::Other(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
    };
    let headers = headers(&input);
    let body = input.body.bytes();
    let offset = Duration::from_millis(u64::from(input.received_offset_ms.unsigned_abs()));
    let received = if input.received_offset_ms >= 0 {
        base() + offset
    } else {
        base() - offset
    };
    let flags = Flags {
        transcript: input.flags.0,
        recording: input.flags.1,
        analytics: input.flags.2,
    };
    let answer = Answer {
        status,
        headers: &headers,
        body: &body,
        flags,
        received,
    };
    let decision = policy.decide(&answer);
    assert_eq!(decision, policy.decide(&answer), "not deterministic");
    if trace() {
        eprintln!("decision: {decision:?}");
        if std::env::var_os("STORE_POLICY_TRACE").is_some_and(|v| v == "2") {
            eprintln!("body: {}", String::from_utf8_lossy(&body));
            eprintln!("headers: {headers:?}");
        }
    }

    let lifetime = match decision {
        Ok(lifetime) => lifetime,
        Err(NoStoreReason::Status(refused)) => {
            assert_eq!(refused, status);
            return;
        }
        // A 404 the upstream marked no-store is not remembered either.
        Err(NoStoreReason::NoStore) if status == StatusCode::NOT_FOUND => return,
        Err(_) => {
            assert_eq!(status, StatusCode::OK, "a non-200 refused for its body");
            return;
        }
    };
    let (fresh, usable) = (lifetime.fresh_for, lifetime.usable_for);
    assert!(fresh <= usable, "{lifetime:?}");
    match lifetime.kind {
        EntryKind::NotFound => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(!policy.not_found_ttl.is_zero());
            assert_eq!(fresh, policy.not_found_ttl);
            assert_eq!(usable, fresh);
            assert_eq!(lifetime.hard_in, None);
            return;
        }
        EntryKind::Complete => {
            assert_eq!(status, StatusCode::OK);
            assert!(fresh <= policy.max_ttl, "{lifetime:?}");
            assert!(
                usable <= fresh.saturating_add(policy.stale_if_error),
                "{lifetime:?}"
            );
        }
        EntryKind::Provisional => {
            assert_eq!(status, StatusCode::OK);
            assert!(!policy.in_progress_ttl.is_zero());
            assert!(fresh <= policy.in_progress_ttl, "{lifetime:?}");
            assert_eq!(usable, fresh);
        }
    }
    // serde_json's Value stops at 128 levels of nesting, where the policy's
    // reading (which skips what it does not need) goes on: such a body has
    // no independent reading here.
    if serde_json::from_slice::<Value>(&body)
        .is_err_and(|e| e.to_string().contains("recursion limit"))
    {
        return;
    }
    let bound = url_bound(&headers, &body, received, policy.expiry_margin);
    match (lifetime.hard_in, bound) {
        (Some(hard), Some(bound)) => {
            assert!(!hard.is_zero(), "stored with no life left: {lifetime:?}");
            assert!(hard <= bound, "{lifetime:?} past the URL's {bound:?}");
            assert!(fresh <= hard && usable <= hard, "{lifetime:?}");
        }
        (None, None) => {}
        (hard, bound) => panic!("URL deadline {hard:?}, independent reading {bound:?}"),
    }
}
