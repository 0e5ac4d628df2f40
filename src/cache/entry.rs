//! A stored answer: the parts a HIT is served from, and the instants that bound its life.
//!
//! The instants are monotonic (`Instant`), computed once at store time from
//! the policy's durations; every serve checks them against `Instant::now()`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use headers::{Age, HeaderMapExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::encoding::Encoding;
use super::policy::{EntryKind, Lifetime};
use super::representation::{self, Variant};
use super::stored_body::StoredBody;

/// Upstream response headers a HIT repeats; anything else (cookies, request
/// ids, rate-limit counters) belonged to the one exchange that fetched it.
const KEPT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_LANGUAGE,
];

/// Values every entry would otherwise hold a copy of, kept as one static
/// value: a HIT clones each kept header, and cloning a static value writes
/// no reference count (which the workers would share).
static COMMON_VALUES: [&str; 2] = ["application/json", "application/json; charset=utf-8"];

/// The largest `Age` kept (RFC 9111 section 1.2.2: 2^31 seconds).
const MAX_AGE_SECS: u64 = 1 << 31;

/// One cached conversation answer.
#[derive(Debug)]
pub struct CachedResponse {
    status: StatusCode,
    kind: EntryKind,
    /// The kept upstream headers and the ETag, exactly as many as there are.
    headers: Box<[(HeaderName, HeaderValue)]>,
    body: StoredBody,
    received_at: Instant,
    upstream_age: Duration,
    /// `fresh_until - received_at`, kept: a HIT weighs its life left against it.
    fresh_for: Duration,
    fresh_until: Instant,
    usable_until: Instant,
    hard: Option<Instant>,
    /// The body precompressed, per coding (filled in the background).
    variants: Vec<Variant>,
    /// Set once a compression of this entry has been started, so each coding
    /// is computed at most once per entry however many HITs ask at once.
    compression_claimed: AtomicBool,
    /// Set when the store let it go (replaced, removed, purged, evicted):
    /// a thread's hot entries answer only with entries not retired.
    retired: AtomicBool,
}

/// A kept upstream header value: a common one as its static value, any
/// other as a copy of its bytes (a parsed value shares the whole read
/// buffer it was parsed from; an entry keeps the bytes, not the buffer).
pub(crate) fn kept_value(bytes: &[u8]) -> Option<HeaderValue> {
    match COMMON_VALUES
        .iter()
        .find(|common| common.as_bytes() == bytes)
    {
        Some(common) => Some(HeaderValue::from_static(common)),
        None => HeaderValue::from_bytes(bytes).ok(),
    }
}

/// Whether an entry may be served at some instant, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Before `fresh_until`: a plain HIT.
    Fresh,
    /// Between `fresh_until` and `usable_until`: only in place of a failing upstream.
    Stale,
    /// At or past `usable_until`: never served.
    Dead,
}

impl CachedResponse {
    /// An entry from an upstream answer with `status`, received at `received_at`.
    pub fn new(
        status: StatusCode,
        upstream_headers: &HeaderMap,
        body: Bytes,
        received_at: Instant,
        lifetime: Lifetime,
    ) -> CachedResponse {
        // A 200 carries a strong ETag of its own in place of the upstream's.
        let etag = (status == StatusCode::OK)
            .then(|| representation::strong_etag(upstream_headers, &body));
        let own_etag = etag.is_some();
        let kept = KEPT_HEADERS
            .iter()
            .filter(|&name| !(own_etag && name == header::ETAG))
            .flat_map(|name| {
                upstream_headers
                    .get_all(name)
                    .iter()
                    .filter_map(|value| kept_value(value.as_bytes()))
                    .map(|value| (name.clone(), value))
            });
        let headers = kept.chain(etag.map(|etag| (header::ETAG, etag))).collect();
        // RFC 9111 caps an age at 2^31 seconds; a larger one is taken as that.
        let upstream_age = upstream_headers
            .typed_get::<Age>()
            .map(|age| Duration::from_secs(age.as_secs().min(MAX_AGE_SECS)))
            .unwrap_or_default();
        // The body may be a slice of a larger read buffer: keep an exact copy,
        // so what the weigher counts is what the entry holds.
        let body = StoredBody::copy_from(&body);
        CachedResponse::restore(status, headers, body, received_at, upstream_age, lifetime)
    }

    /// An entry from its parts, as [`CachedResponse::new`] made them.
    pub(crate) fn restore(
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: StoredBody,
        received_at: Instant,
        upstream_age: Duration,
        lifetime: Lifetime,
    ) -> CachedResponse {
        CachedResponse {
            status,
            kind: lifetime.kind,
            headers: headers.into_boxed_slice(),
            body,
            received_at,
            upstream_age,
            fresh_for: lifetime.fresh_for,
            fresh_until: received_at + lifetime.fresh_for,
            usable_until: received_at + lifetime.usable_for,
            hard: lifetime.hard_in.map(|hard| received_at + hard),
            variants: Vec::new(),
            compression_claimed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    /// This entry with its body precompressed in `variants` as well.
    pub(crate) fn with_variants(&self, variants: Vec<Variant>) -> CachedResponse {
        CachedResponse {
            status: self.status,
            kind: self.kind,
            headers: self.headers.clone(),
            body: self.body.clone(),
            received_at: self.received_at,
            upstream_age: self.upstream_age,
            fresh_for: self.fresh_for,
            fresh_until: self.fresh_until,
            usable_until: self.usable_until,
            hard: self.hard,
            variants,
            compression_claimed: AtomicBool::new(true),
            retired: AtomicBool::new(false),
        }
    }

    /// Marks the entry as let go by the store.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether the store has let the entry go.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Claims the one compression of this entry: true for the first caller
    /// only (until [`CachedResponse::release_compression`]).
    pub(crate) fn claim_compression(&self) -> bool {
        !self.compression_claimed.swap(true, Ordering::AcqRel)
    }

    /// Gives the claim back when the compression could not start.
    pub(crate) fn release_compression(&self) {
        self.compression_claimed.store(false, Ordering::Release);
    }

    /// The strong ETag of the identity body (200 entries only).
    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find_map(|(name, value)| (name == header::ETAG).then_some(value))
    }

    /// The precompressed variant in `encoding`, once it has been made.
    pub(crate) fn variant(&self, encoding: Encoding) -> Option<&Variant> {
        self.variants.iter().find(|v| v.encoding() == encoding)
    }

    /// Whether the precompressed variants have been made.
    pub(crate) fn has_variants(&self) -> bool {
        !self.variants.is_empty()
    }

    /// Whether the body is worth compressing (a 200 of at least 1 KiB).
    pub(crate) fn compressible(&self) -> bool {
        self.status == StatusCode::OK && self.body.len() >= super::encoding::MIN_COMPRESSED_BODY
    }

    /// The status it is served with (200, or 404 for a remembered miss).
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What kind of answer it holds.
    pub(crate) fn kind(&self) -> EntryKind {
        self.kind
    }

    /// The headers a HIT repeats.
    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The body, shared.
    pub(crate) fn body(&self) -> &StoredBody {
        &self.body
    }

    /// How the entry may be served at `now`. Past the URL deadline it is
    /// dead whatever the other instants say.
    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        if self.hard.is_some_and(|hard| now >= hard) || now >= self.usable_until {
            Freshness::Dead
        } else if now < self.fresh_until {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// Whether a HIT at `now` should start a background refresh: a complete
    /// entry in the last `fraction` of its fresh life.
    pub(crate) fn wants_refresh(&self, now: Instant, fraction: f64) -> bool {
        if self.kind != EntryKind::Complete || fraction <= 0.0 {
            return false;
        }
        // In seconds as floats: `Duration::mul_f64` checks and rounds to
        // nanoseconds, which cost every HIT about 150 instructions.
        self.time_to_live(now).as_secs_f64() < self.fresh_for.as_secs_f64() * fraction
    }

    /// When the entry stops being a plain HIT.
    pub(crate) fn fresh_until(&self) -> Instant {
        self.fresh_until
    }

    /// When the entry leaves the cache.
    pub(crate) fn usable_until(&self) -> Instant {
        self.usable_until
    }

    /// When its recording URL dies, less the margin.
    pub(crate) fn hard(&self) -> Option<Instant> {
        self.hard
    }

    /// When its answer was received.
    pub(crate) fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The upstream's own `Age` on receipt.
    pub(crate) fn upstream_age(&self) -> Duration {
        self.upstream_age
    }

    /// Fresh life left at `now`.
    pub(crate) fn time_to_live(&self, now: Instant) -> Duration {
        self.fresh_until.saturating_duration_since(now)
    }

    /// The `age` to send: seconds held here plus the upstream's own `Age`.
    pub(crate) fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.received_at)
            .saturating_add(self.upstream_age)
            .as_secs()
    }

    /// Bytes this entry holds, for the cache's byte bound.
    pub(crate) fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let variants: usize = self
            .variants
            .iter()
            .map(|v| v.body().len() + v.etag().len() + std::mem::size_of::<Variant>())
            .sum();
        let total = self.body.len() + variants + headers + std::mem::size_of::<Self>();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests;
