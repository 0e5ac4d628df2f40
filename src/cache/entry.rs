//! A stored answer: the parts a HIT is served from, and the instants that bound its life.

use std::time::{Duration, Instant};

use bytes::Bytes;
use headers::{Age, HeaderMapExt};
use http::{header, HeaderMap, HeaderName};

use super::policy::Lifetime;

/// Upstream response headers a HIT repeats; anything else (cookies, request
/// ids, rate-limit counters) belonged to the one exchange that fetched it.
const KEPT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_LANGUAGE,
];

/// One cached conversation answer (always a 200).
#[derive(Debug)]
pub struct CachedResponse {
    headers: HeaderMap,
    body: Bytes,
    received_at: Instant,
    upstream_age: Duration,
    fresh_until: Instant,
}

impl CachedResponse {
    /// An entry from an upstream answer received at `received_at`.
    pub fn new(
        upstream_headers: &HeaderMap,
        body: Bytes,
        received_at: Instant,
        lifetime: Lifetime,
    ) -> CachedResponse {
        let mut headers = HeaderMap::with_capacity(KEPT_HEADERS.len() + 3);
        for name in KEPT_HEADERS {
            for value in upstream_headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let upstream_age = upstream_headers
            .typed_get::<Age>()
            .map(|age| Duration::from_secs(age.as_secs()))
            .unwrap_or_default();
        CachedResponse {
            headers,
            body,
            received_at,
            upstream_age,
            fresh_until: received_at + lifetime.fresh_for,
        }
    }

    /// The headers a HIT repeats.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, shared.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the entry may still be served at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    /// When the entry stops being served.
    pub fn fresh_until(&self) -> Instant {
        self.fresh_until
    }

    /// Fresh life left at `now`.
    pub fn time_to_live(&self, now: Instant) -> Duration {
        self.fresh_until.saturating_duration_since(now)
    }

    /// The `age` to send: seconds held here plus the upstream's own `Age`.
    pub fn age(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.received_at) + self.upstream_age).as_secs()
    }

    /// Bytes this entry holds, for the cache's byte bound.
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let total = self.body.len() + headers + std::mem::size_of::<Self>();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(upstream: &HeaderMap, received_at: Instant, fresh_for: Duration) -> CachedResponse {
        CachedResponse::new(
            upstream,
            Bytes::from_static(b"{\"data\":{}}"),
            received_at,
            Lifetime { fresh_for },
        )
    }

    #[test]
    fn freshness_ends_exactly_at_the_deadline() {
        let t0 = Instant::now();
        let e = entry(&HeaderMap::new(), t0, Duration::from_secs(10));
        assert!(e.is_fresh(t0));
        assert!(e.is_fresh(t0 + Duration::from_millis(9_999)));
        assert!(!e.is_fresh(t0 + Duration::from_secs(10)));
        assert_eq!(
            e.time_to_live(t0 + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(e.time_to_live(t0 + Duration::from_secs(40)), Duration::ZERO);
    }

    #[test]
    fn age_counts_time_held_plus_the_upstream_age() {
        let t0 = Instant::now();
        let mut upstream = HeaderMap::new();
        upstream.insert(header::AGE, HeaderValue::from_static("7"));
        let e = entry(&upstream, t0, Duration::from_secs(100));
        assert_eq!(e.age(t0), 7);
        assert_eq!(e.age(t0 + Duration::from_millis(2_500)), 9);
        let plain = entry(&HeaderMap::new(), t0, Duration::from_secs(100));
        assert_eq!(plain.age(t0 + Duration::from_secs(3)), 3);
    }

    #[test]
    fn only_representation_headers_are_kept() {
        let mut upstream = HeaderMap::new();
        upstream.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        upstream.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        upstream.insert("x-request-id", HeaderValue::from_static("abc"));
        let e = entry(&upstream, Instant::now(), Duration::from_secs(1));
        assert_eq!(e.headers().len(), 1);
        assert_eq!(e.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn weight_counts_the_body() {
        let e = entry(&HeaderMap::new(), Instant::now(), Duration::from_secs(1));
        assert!(e.weight() as usize >= e.body().len());
    }
}
