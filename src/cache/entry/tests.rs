//! Unit tests of a stored entry: its instants and freshness, age, the headers it keeps, its weight.

use super::*;
use http::HeaderValue;

const SECOND: Duration = Duration::from_secs(1);

fn lifetime(fresh: u64, usable: u64, hard: Option<u64>) -> Lifetime {
    Lifetime {
        kind: EntryKind::Complete,
        fresh_for: SECOND * fresh as u32,
        usable_for: SECOND * usable as u32,
        hard_in: hard.map(|h| SECOND * h as u32),
    }
}

fn entry_with(upstream: &HeaderMap, received_at: Instant, lifetime: Lifetime) -> CachedResponse {
    CachedResponse::new(
        StatusCode::OK,
        upstream,
        Bytes::from_static(b"{\"data\":{}}"),
        received_at,
        lifetime,
    )
}

fn entry(upstream: &HeaderMap, received_at: Instant, fresh_for: Duration) -> CachedResponse {
    let secs = fresh_for.as_secs();
    entry_with(upstream, received_at, lifetime(secs, secs, None))
}

#[test]
fn freshness_ends_exactly_at_the_deadline() {
    let t0 = Instant::now();
    let e = entry(&HeaderMap::new(), t0, Duration::from_secs(10));
    assert_eq!(e.freshness(t0), Freshness::Fresh);
    assert_eq!(
        e.freshness(t0 + Duration::from_millis(9_999)),
        Freshness::Fresh
    );
    assert_eq!(e.freshness(t0 + Duration::from_secs(10)), Freshness::Dead);
    assert_eq!(
        e.time_to_live(t0 + Duration::from_secs(4)),
        Duration::from_secs(6)
    );
    assert_eq!(e.time_to_live(t0 + Duration::from_secs(40)), Duration::ZERO);
}

#[test]
fn an_entry_is_stale_between_fresh_and_usable_and_never_past_hard() {
    let t0 = Instant::now();
    let e = entry_with(&HeaderMap::new(), t0, lifetime(10, 30, Some(30)));
    assert_eq!(e.freshness(t0 + SECOND * 9), Freshness::Fresh);
    assert_eq!(e.freshness(t0 + SECOND * 10), Freshness::Stale);
    assert_eq!(e.freshness(t0 + SECOND * 29), Freshness::Stale);
    assert_eq!(e.freshness(t0 + SECOND * 30), Freshness::Dead);
    // Even if a bug gave it a usable time past the URL deadline.
    let broken = entry_with(&HeaderMap::new(), t0, lifetime(10, 60, Some(20)));
    assert_eq!(broken.freshness(t0 + SECOND * 20), Freshness::Dead);
}

#[test]
fn refresh_is_wanted_in_the_last_fraction_of_fresh_life() {
    let t0 = Instant::now();
    let e = entry_with(&HeaderMap::new(), t0, lifetime(100, 200, None));
    assert!(!e.wants_refresh(t0 + SECOND * 89, 0.1));
    assert!(!e.wants_refresh(t0 + SECOND * 90, 0.1));
    assert!(e.wants_refresh(t0 + SECOND * 91, 0.1));
    assert!(!e.wants_refresh(t0 + SECOND * 95, 0.0));
    let provisional = entry_with(
        &HeaderMap::new(),
        t0,
        Lifetime {
            kind: EntryKind::Provisional,
            ..lifetime(100, 100, None)
        },
    );
    assert!(!provisional.wants_refresh(t0 + SECOND * 99, 0.5));
}

#[test]
fn an_entry_with_its_compressed_copies_keeps_its_times_and_its_refresh_rule() {
    let t0 = Instant::now();
    let e = entry_with(&HeaderMap::new(), t0, lifetime(100, 200, Some(300)));
    let compressed = e.with_variants(Vec::new());
    assert_eq!(compressed.received_at(), e.received_at());
    assert_eq!(compressed.fresh_until(), e.fresh_until());
    assert_eq!(compressed.usable_until(), e.usable_until());
    assert_eq!(compressed.hard(), e.hard());
    for seconds in [89, 90, 91, 99] {
        let at = t0 + SECOND * seconds;
        assert_eq!(
            compressed.wants_refresh(at, 0.1),
            e.wants_refresh(at, 0.1),
            "at {seconds} s"
        );
    }
}

#[test]
fn age_counts_time_held_plus_the_upstream_age() {
    let t0 = Instant::now();
    let mut upstream = HeaderMap::new();
    upstream.insert(header::AGE, HeaderValue::from_static("7"));
    let e = entry(&upstream, t0, Duration::from_secs(100));
    assert_eq!(e.age(t0), 7);
    assert_eq!(e.age(t0 + Duration::from_millis(2_500)), 9);
    let mut absurd = HeaderMap::new();
    absurd.insert(
        header::AGE,
        HeaderValue::from_static("18446744073709551615"),
    );
    let huge = entry(&absurd, t0, Duration::from_secs(100));
    assert_eq!(
        huge.age(t0 + Duration::from_secs(5)),
        (1 << 31) + 5,
        "capped, never a panic"
    );
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
    let mut kept: Vec<&str> = e.headers().iter().map(|(name, _)| name.as_str()).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["content-type", "etag"], "a strong ETag is added");
    assert_eq!(
        e.headers()[0],
        (header::CONTENT_TYPE, upstream[header::CONTENT_TYPE].clone())
    );
}

#[test]
fn a_common_content_type_is_kept_as_the_static_value_any_other_as_a_copy() {
    for (sent, interned) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("application/problem+json", false),
        ("Application/JSON", false),
    ] {
        let mut upstream = HeaderMap::new();
        let parsed = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(sent.as_bytes()));
        upstream.insert(header::CONTENT_TYPE, parsed.unwrap());
        let e = entry(&upstream, Instant::now(), Duration::from_secs(1));
        let kept = &e.headers()[0].1;
        assert_eq!(kept, sent, "kept exactly as sent");
        let at = kept.as_bytes().as_ptr();
        let is_static = COMMON_VALUES.iter().any(|common| common.as_ptr() == at);
        assert_eq!(is_static, interned, "{sent}");
        assert_ne!(at, upstream[header::CONTENT_TYPE].as_bytes().as_ptr());
    }
}

#[test]
fn the_upstream_etag_is_kept_once() {
    let mut upstream = HeaderMap::new();
    upstream.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    let e = entry(&upstream, Instant::now(), Duration::from_secs(1));
    assert_eq!(e.headers().len(), 1);
    assert_eq!(e.etag().unwrap(), "\"v1\"");
    assert_ne!(
        e.etag().unwrap().as_bytes().as_ptr(),
        upstream[header::ETAG].as_bytes().as_ptr(),
        "a copy, not a slice of the buffer the head was read into"
    );
}

#[test]
fn weight_counts_the_body() {
    let e = entry(&HeaderMap::new(), Instant::now(), Duration::from_secs(1));
    assert!(e.weight() as usize >= e.body().len());
}
