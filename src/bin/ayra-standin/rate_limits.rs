//! Per-key rate limits and scripted `429`s, and the record of when each API key called (what tests of a caller's pacing read).
//!
//! A key is the bearer token of a `/v1/` request (empty without one). Set
//! with `PUT /_standin/rate_limit` (`{"rate": 20, "burst": 5}`: a token
//! bucket per key; past it, `429` with `retry-after` in whole seconds until
//! a token) and `PUT /_standin/throttle` (`{"calls": 1, "retry_after": "2",
//! "key": "sk_a"}`: the next `calls` calls, of that key or any, get `429`
//! with that `retry-after`). `GET /_standin/calls` gives each key's call
//! times, in milliseconds since the stand-in started, with the path called
//! and the status each got from these knobs.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// `PUT /_standin/rate_limit`: calls per second per key, at most `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    rate: f64,
    burst: u32,
}

/// `PUT /_standin/throttle`: the next `calls` calls get `429` with `retry_after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    calls: u32,
    /// Sent verbatim: seconds or an HTTP date.
    retry_after: String,
    /// Only this key's calls (any key's when absent).
    key: Option<String>,
}

impl RateLimit {
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let limit: Self =
            serde_json::from_slice(body).map_err(|error| format!("Invalid rate limit: {error}"))?;
        if !(limit.rate > 0.0 && limit.rate <= 1e6) || limit.burst == 0 {
            return Err("rate must be in (0, 1e6] and burst at least 1".to_owned());
        }
        Ok(limit)
    }
}

impl Throttle {
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let throttle: Self =
            serde_json::from_slice(body).map_err(|error| format!("Invalid throttle: {error}"))?;
        http::HeaderValue::from_str(&throttle.retry_after)
            .map_err(|_| "retry_after is not a valid header value".to_owned())?;
        Ok(throttle)
    }
}

/// One call as the record keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// Milliseconds since the stand-in started.
    at_ms: f64,
    /// The path called, without the query (which caller made a call, when
    /// callers share a key but not their paths).
    path: String,
    /// 429 when these knobs refused it, else 0 (answered by the other knobs).
    limited: u16,
}

/// A key's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    rate_limit: Option<RateLimit>,
    buckets: HashMap<String, Bucket>,
    throttle: Option<Throttle>,
    calls: HashMap<String, Vec<Call>>,
}

/// The knobs and the record, shared by every connection.
#[derive(Debug)]
pub struct RateLimits {
    started: Instant,
    inner: Mutex<Inner>,
}

impl RateLimits {
    pub fn new() -> Self {
        RateLimits {
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        let mut inner = self.lock();
        inner.rate_limit = limit;
        inner.buckets.clear();
    }

    pub fn set_throttle(&self, throttle: Option<Throttle>) {
        self.lock().throttle = throttle;
    }

    /// Records a call by `key` to `path` at `now`; the `retry-after` to
    /// answer it with when a knob refuses it.
    pub fn call(&self, key: &str, path: &str, now: Instant) -> Option<String> {
        let mut inner = self.lock();
        let refused = inner.throttled(key).or_else(|| inner.limited(key, now));
        let at_ms = now.duration_since(self.started).as_secs_f64() * 1000.0;
        let limited = if refused.is_some() { 429 } else { 0 };
        let calls = inner.calls.entry(key.to_owned()).or_default();
        let path = path.to_owned();
        calls.push(Call {
            at_ms,
            path,
            limited,
        });
        refused
    }

    /// The body of `GET /_standin/calls`: each key's calls, oldest first,
    /// and the time now on their clock.
    pub fn record(&self) -> serde_json::Value {
        let now_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        serde_json::json!({ "calls": &self.lock().calls, "now_ms": now_ms })
    }

    /// Back to no knobs and an empty record.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }
}

impl Inner {
    fn throttled(&mut self, key: &str) -> Option<String> {
        let throttle = self.throttle.as_mut()?;
        if throttle.calls == 0 || throttle.key.as_deref().is_some_and(|only| only != key) {
            return None;
        }
        throttle.calls -= 1;
        Some(throttle.retry_after.clone())
    }

    fn limited(&mut self, key: &str, now: Instant) -> Option<String> {
        let limit = self.rate_limit?;
        let burst = f64::from(limit.burst);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * limit.rate;
        bucket.tokens = (bucket.tokens + refilled).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return None;
        }
        let seconds = ((1.0 - bucket.tokens) / limit.rate).ceil().max(1.0);
        Some(format!("{seconds:.0}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_past_its_burst_is_refused_until_a_token_comes_and_others_are_not() {
        let limits = RateLimits::new();
        limits.set_rate_limit(Some(
            RateLimit::from_json(br#"{"rate": 2, "burst": 2}"#).unwrap(),
        ));
        let t0 = Instant::now();
        assert_eq!(limits.call("a", "/v1/x", t0), None);
        assert_eq!(limits.call("a", "/v1/x", t0), None);
        assert_eq!(limits.call("a", "/v1/x", t0).as_deref(), Some("1"));
        assert_eq!(limits.call("b", "/v1/x", t0), None);
        assert_eq!(
            limits.call("a", "/v1/x", t0 + Duration::from_millis(500)),
            None
        );
        let record = limits.record();
        assert_eq!(record["calls"]["a"].as_array().unwrap().len(), 4);
        assert_eq!(record["calls"]["a"][2]["limited"], 429);
        assert_eq!(record["calls"]["a"][2]["path"], "/v1/x");
    }

    #[test]
    fn a_throttle_refuses_the_next_calls_of_its_key_only() {
        let limits = RateLimits::new();
        let throttle = br#"{"calls": 1, "retry_after": "2", "key": "a"}"#;
        limits.set_throttle(Some(Throttle::from_json(throttle).unwrap()));
        let t0 = Instant::now();
        assert_eq!(limits.call("b", "/v1/x", t0), None);
        assert_eq!(limits.call("a", "/v1/x", t0).as_deref(), Some("2"));
        assert_eq!(limits.call("a", "/v1/x", t0), None);
        assert!(RateLimit::from_json(br#"{"rate": 0, "burst": 1}"#).is_err());
        assert!(Throttle::from_json(br#"{"calls": 1, "retry_after": "a\nb"}"#).is_err());
    }
}
