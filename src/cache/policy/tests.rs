//! Unit tests of the storing decision and the lifetime arithmetic, clock passed in.

use super::*;
use http::HeaderValue;
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);

fn policy() -> StorePolicy {
    StorePolicy {
        max_ttl: HOUR,
        expiry_margin: Duration::from_secs(60),
        statuses: vec!["completed".into()],
        stale_if_error: HOUR,
        in_progress_ttl: Duration::ZERO,
        not_found_ttl: Duration::ZERO,
    }
}

/// A fixed "now": 2026-01-01T00:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn rfc3339(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at).unwrap().to_string()
}

fn body(status: &str, expires_at: serde_json::Value) -> Vec<u8> {
    json!({"data": {
        "id": "conv_1", "status": status,
        "recording": {"url": "https://r.example/x.mp3", "duration": 3, "expires_at": expires_at},
        "analytics": {"interruptions": 0}
    }})
    .to_string()
    .into_bytes()
}

fn decide_with(
    policy: &StorePolicy,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Lifetime, NoStoreReason> {
    policy.decide(&Answer {
        status: StatusCode::OK,
        headers,
        body,
        flags: Flags::default(),
        received: now(),
    })
}

fn decide(body: &[u8]) -> Result<Lifetime, NoStoreReason> {
    decide_with(&policy(), &HeaderMap::new(), body)
}

fn expiring_in(secs: u64) -> Vec<u8> {
    body(
        "completed",
        json!(rfc3339(now() + Duration::from_secs(secs))),
    )
}

fn with_date(at: SystemTime) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let date = httpdate::fmt_http_date(at);
    headers.insert(header::DATE, HeaderValue::from_str(&date).unwrap());
    headers
}

#[test]
fn lifetime_is_the_url_life_less_the_margin() {
    let lifetime = decide(&expiring_in(600)).unwrap();
    assert_eq!(lifetime.fresh_for, Duration::from_secs(540));
}

#[test]
fn lifetime_is_capped_by_max_ttl() {
    let lifetime = decide(&expiring_in(24 * 3600)).unwrap();
    assert_eq!(lifetime.fresh_for, HOUR);
}

#[test]
fn without_a_recording_url_the_lifetime_is_max_ttl() {
    let no_recording = json!({"data": {"status": "completed", "recording": null, "analytics": {}}});
    let null_url = json!({"data": {"status": "completed", "analytics": {},
        "recording": {"url": null, "expires_at": "garbage"}}});
    let absent = json!({"data": {"status": "completed", "analytics": {}}});
    for b in [no_recording, null_url, absent] {
        let lifetime = decide(b.to_string().as_bytes()).unwrap();
        assert_eq!(lifetime.fresh_for, HOUR, "{b}");
    }
}

#[test]
fn expiry_inside_the_margin_is_not_stored() {
    assert_eq!(
        decide(&expiring_in(60)),
        Err(NoStoreReason::LifetimeTooShort)
    );
    assert_eq!(
        decide(&expiring_in(30)),
        Err(NoStoreReason::LifetimeTooShort)
    );
    let past = body("completed", json!(rfc3339(now() - HOUR)));
    assert_eq!(decide(&past), Err(NoStoreReason::LifetimeTooShort));
    assert_eq!(
        decide(&expiring_in(61)).unwrap().fresh_for,
        Duration::from_secs(1)
    );
}

#[test]
fn the_upstream_date_is_the_clock_that_signed_the_url() {
    // The upstream's clock runs 10 minutes behind ours; its URL lives 20 minutes
    // by its own clock. The entry lives 20 minutes less the margin and the Date's
    // one-second resolution from receipt, not 10 minutes.
    let upstream_now = now() - Duration::from_secs(600);
    let expires = body(
        "completed",
        json!(rfc3339(upstream_now + Duration::from_secs(1200))),
    );
    let lifetime = decide_with(&policy(), &with_date(upstream_now), &expires).unwrap();
    assert_eq!(lifetime.fresh_for, Duration::from_secs(1200 - 60 - 1));

    // Ahead by 10 minutes: the same URL life, as seen by the signer.
    let upstream_now = now() + Duration::from_secs(600);
    let expires = body(
        "completed",
        json!(rfc3339(upstream_now + Duration::from_secs(1200))),
    );
    let lifetime = decide_with(&policy(), &with_date(upstream_now), &expires).unwrap();
    assert_eq!(lifetime.fresh_for, Duration::from_secs(1200 - 60 - 1));
}

#[test]
fn a_date_is_read_as_the_end_of_its_second() {
    // expires_at is 100.5 s after the named second; the signer may have been
    // anywhere in that second, so only 99.5 s are sure.
    let expires = body(
        "completed",
        json!(rfc3339(now() + Duration::from_millis(100_500))),
    );
    let mut zero_margin = policy();
    zero_margin.expiry_margin = Duration::ZERO;
    let lifetime = decide_with(&zero_margin, &with_date(now()), &expires).unwrap();
    assert_eq!(lifetime.fresh_for, Duration::from_millis(99_500));
}

#[test]
fn an_unreadable_date_falls_back_to_the_receive_time() {
    let mut headers = HeaderMap::new();
    headers.insert(header::DATE, HeaderValue::from_static("yesterday"));
    let lifetime = decide_with(&policy(), &headers, &expiring_in(600)).unwrap();
    assert_eq!(lifetime.fresh_for, Duration::from_secs(540));
}

#[test]
fn rfc3339_offsets_are_read() {
    // 00:10:00+01:00 is 23:10 UTC the day before: already dead.
    let dead = body("completed", json!("2026-01-01T00:10:00+01:00"));
    assert_eq!(decide(&dead), Err(NoStoreReason::LifetimeTooShort));
    let alive = body("completed", json!("2025-12-31T19:10:00-05:00"));
    assert_eq!(decide(&alive).unwrap().fresh_for, Duration::from_secs(540));
}

#[test]
fn a_recording_url_needs_a_readable_expiry() {
    for bad in [
        json!("soon"),
        json!(null),
        json!(12345),
        json!("2026-13-01T00:00:00Z"),
    ] {
        assert_eq!(
            decide(&body("completed", bad.clone())),
            Err(NoStoreReason::MissingExpiry),
            "{bad}"
        );
    }
    let absent = json!({"data": {"status": "completed", "analytics": {},
        "recording": {"url": "https://r.example/x.mp3"}}});
    assert_eq!(
        decide(absent.to_string().as_bytes()),
        Err(NoStoreReason::MissingExpiry)
    );
}

#[test]
fn only_listed_statuses_are_stored() {
    let live = body("in_progress", json!(rfc3339(now() + HOUR)));
    assert_eq!(decide(&live), Err(NoStoreReason::InProgress));
    let no_status = json!({"data": {"analytics": {}}});
    assert_eq!(
        decide(no_status.to_string().as_bytes()),
        Err(NoStoreReason::InProgress)
    );
    let mut archived = policy();
    archived.statuses.push("archived".into());
    let b = body("archived", json!(rfc3339(now() + HOUR)));
    assert!(decide_with(&archived, &HeaderMap::new(), &b).is_ok());
}

#[test]
fn pending_analytics_block_storing_only_when_asked_for() {
    let pending = json!({"data": {"status": "completed", "analytics": null}}).to_string();
    assert_eq!(
        decide(pending.as_bytes()),
        Err(NoStoreReason::AnalyticsPending)
    );
    let absent = json!({"data": {"status": "completed"}}).to_string();
    assert_eq!(
        decide(absent.as_bytes()),
        Err(NoStoreReason::AnalyticsPending)
    );
    let without = policy().decide(&Answer {
        status: StatusCode::OK,
        headers: &HeaderMap::new(),
        body: absent.as_bytes(),
        flags: Flags {
            analytics: false,
            ..Flags::default()
        },
        received: now(),
    });
    assert_eq!(without.unwrap().fresh_for, HOUR);
}

#[test]
fn no_store_and_other_statuses_are_refused() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    assert_eq!(
        decide_with(&policy(), &headers, &expiring_in(600)),
        Err(NoStoreReason::NoStore)
    );
    let not_found = policy().decide(&Answer {
        status: StatusCode::NOT_FOUND,
        headers: &HeaderMap::new(),
        body: b"{}",
        flags: Flags::default(),
        received: now(),
    });
    assert_eq!(not_found, Err(NoStoreReason::Status(StatusCode::NOT_FOUND)));
}

#[test]
fn unreadable_bodies_are_refused() {
    for bad in [
        &b"{\"data\": {"[..],
        b"[]",
        b"",
        b"{\"error\": {}}",
        b"{\"data\": 3}",
    ] {
        assert_eq!(decide(bad), Err(NoStoreReason::UnreadableBody), "{bad:?}");
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn without_a_url_an_entry_is_fresh_for_max_ttl_and_usable_for_stale_if_error_more() {
    let body = json!({"data": {"status": "completed", "recording": null, "analytics": {}}});
    let lifetime = decide(body.to_string().as_bytes()).unwrap();
    assert_eq!(lifetime.kind, EntryKind::Complete);
    assert_eq!(lifetime.fresh_for, HOUR);
    assert_eq!(lifetime.usable_for, HOUR * 2);
    assert_eq!(lifetime.hard_in, None);
}

#[test]
fn a_short_max_ttl_leaves_stale_life_up_to_the_url_deadline() {
    let mut short = policy();
    short.max_ttl = secs(600);
    // The URL lives 2 h: hard at 2 h - 60 s; fresh 10 min; usable 10 min + 1 h.
    let lifetime = decide_with(&short, &HeaderMap::new(), &expiring_in(7200)).unwrap();
    assert_eq!(lifetime.hard_in, Some(secs(7140)));
    assert_eq!(lifetime.fresh_for, secs(600));
    assert_eq!(lifetime.usable_for, secs(4200));
    // The URL lives 30 min: stale life stops at its deadline.
    let lifetime = decide_with(&short, &HeaderMap::new(), &expiring_in(1800)).unwrap();
    assert_eq!(lifetime.hard_in, Some(secs(1740)));
    assert_eq!(lifetime.usable_for, secs(1740));
}

#[test]
fn a_url_shorter_than_max_ttl_ends_fresh_and_usable_life_at_once() {
    let lifetime = decide(&expiring_in(1200)).unwrap();
    assert_eq!(lifetime.hard_in, Some(secs(1140)));
    assert_eq!(lifetime.fresh_for, secs(1140));
    assert_eq!(lifetime.usable_for, secs(1140));
}

#[test]
fn stale_if_error_zero_means_no_stale_life() {
    let mut strict = policy();
    strict.stale_if_error = Duration::ZERO;
    strict.max_ttl = secs(600);
    let lifetime = decide_with(&strict, &HeaderMap::new(), &expiring_in(7200)).unwrap();
    assert_eq!(lifetime.fresh_for, secs(600));
    assert_eq!(lifetime.usable_for, secs(600));
}

#[test]
fn a_skewed_date_moves_the_hard_deadline_with_the_signer() {
    let upstream_now = now() - secs(3600);
    let expires = body("completed", json!(rfc3339(upstream_now + secs(1800))));
    let lifetime = decide_with(&policy(), &with_date(upstream_now), &expires).unwrap();
    assert_eq!(lifetime.hard_in, Some(secs(1800 - 60 - 1)));
}

fn micro() -> StorePolicy {
    StorePolicy {
        in_progress_ttl: secs(2),
        not_found_ttl: secs(5),
        ..policy()
    }
}

#[test]
fn live_answers_are_micro_cached_only_when_asked_for() {
    let live = body("in_progress", json!(rfc3339(now() + HOUR)));
    let lifetime = decide_with(&micro(), &HeaderMap::new(), &live).unwrap();
    assert_eq!(lifetime.kind, EntryKind::Provisional);
    assert_eq!(
        (lifetime.fresh_for, lifetime.usable_for),
        (secs(2), secs(2))
    );
    let pending = json!({"data": {"status": "completed", "analytics": null}}).to_string();
    let lifetime = decide_with(&micro(), &HeaderMap::new(), pending.as_bytes()).unwrap();
    assert_eq!(lifetime.kind, EntryKind::Provisional);
    assert_eq!(decide(&live), Err(NoStoreReason::InProgress));
}

#[test]
fn a_micro_cached_answer_never_outlives_its_url() {
    let mut long = micro();
    long.in_progress_ttl = secs(600);
    let live = body("in_progress", json!(rfc3339(now() + secs(90))));
    let lifetime = decide_with(&long, &HeaderMap::new(), &live).unwrap();
    assert_eq!(lifetime.fresh_for, secs(30));
    assert_eq!(lifetime.usable_for, secs(30));
    let dead = body("in_progress", json!(rfc3339(now() + secs(30))));
    assert_eq!(
        decide_with(&long, &HeaderMap::new(), &dead),
        Err(NoStoreReason::LifetimeTooShort)
    );
}

fn not_found(
    policy: &StorePolicy,
    body: &serde_json::Value,
    headers: &HeaderMap,
) -> Result<Lifetime, NoStoreReason> {
    policy.decide(&Answer {
        status: StatusCode::NOT_FOUND,
        headers,
        body: body.to_string().as_bytes(),
        flags: Flags::default(),
        received: now(),
    })
}

#[test]
fn a_missing_conversation_is_remembered_only_when_asked_for() {
    let missing =
        json!({"error": {"type": "not_found", "code": "conversation_not_found", "message": "x"}});
    let lifetime = not_found(&micro(), &missing, &HeaderMap::new()).unwrap();
    assert_eq!(lifetime.kind, EntryKind::NotFound);
    assert_eq!(
        (lifetime.fresh_for, lifetime.usable_for),
        (secs(5), secs(5))
    );
    let refused = Err(NoStoreReason::Status(StatusCode::NOT_FOUND));
    assert_eq!(not_found(&policy(), &missing, &HeaderMap::new()), refused);
    let other = json!({"error": {"type": "not_found", "code": "route_not_found"}});
    assert_eq!(not_found(&micro(), &other, &HeaderMap::new()), refused);
    let mut no_store = HeaderMap::new();
    no_store.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    assert_eq!(
        not_found(&micro(), &missing, &no_store),
        Err(NoStoreReason::NoStore)
    );
}

#[test]
fn no_store_and_private_are_read_in_any_form() {
    for value in [
        "no-store",
        "NO-STORE",
        "no-store, max-age=abc",
        "max-age=\"60\", no-store",
        "no-store;x",
        "private",
        "Private, max-age=60",
        "max-age=\"unterminated",
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        assert_eq!(
            decide_with(&policy(), &headers, &expiring_in(600)),
            Err(NoStoreReason::NoStore),
            "{value}"
        );
    }
    let mut fine = HeaderMap::new();
    fine.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    assert!(decide_with(&policy(), &fine, &expiring_in(600)).is_ok());
}

#[test]
fn a_stale_entry_is_served_until_just_before_the_url_deadline_and_never_at_it() {
    // Fresh for max_ttl (10 min), usable a day past it: only the URL
    // deadline ends it: expires_at, less the Date's second and the margin.
    let mut lenient = policy();
    lenient.max_ttl = Duration::from_secs(600);
    lenient.stale_if_error = 24 * HOUR;
    let expires = body(
        "completed",
        json!(rfc3339(now() + Duration::from_millis(7_200_250))),
    );
    let lifetime = decide_with(&lenient, &with_date(now()), &expires).unwrap();
    let deadline = Duration::from_millis(7_200_250 - 1_000 - 60_000);
    assert_eq!(lifetime.hard_in, Some(deadline));
    assert_eq!(lifetime.usable_for, deadline);
    let received = std::time::Instant::now();
    let entry = crate::cache::entry::CachedResponse::new(
        StatusCode::OK,
        &HeaderMap::new(),
        bytes::Bytes::from_static(b"{}"),
        received,
        lifetime,
    );
    use crate::cache::entry::Freshness;
    let hard = received + deadline;
    assert_eq!(
        entry.freshness(hard - Duration::from_millis(1)),
        Freshness::Stale
    );
    assert_eq!(entry.freshness(hard), Freshness::Dead);
}
