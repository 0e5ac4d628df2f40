//! Properties over the public API (proptest): lifetimes stay inside every
//! bound of SPEC sections 4 and 8, the cache key does not depend on how the
//! flags are written, and never coincides across credentials.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ayra_cache::auth::Authenticator;
use ayra_cache::cache::key::{read_flags, CacheKey};
use ayra_cache::cache::policy::{Answer, EntryKind, NoStoreReason, StorePolicy};
use ayra_cache::config::Secret;
use ayra_cache::domain::{ConversationId, Fingerprint, Flags, Partition};
use ayra_cache::error::ProxyError;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const BASE_SECS: u64 = 1_767_225_600;

fn at_secs(offset: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(BASE_SECS.saturating_add_signed(offset))
}

/// One upstream answer to decide on, and the policy to decide with.
#[derive(Debug, Clone)]
struct Case {
    /// Receive time, seconds from the base.
    received: i64,
    /// The upstream's `Date`, seconds from the receive time (its clock may be skewed).
    date: Option<i64>,
    /// `expires_at`, milliseconds after the instant `Date` names (or the receive time).
    url_life_ms: i64,
    /// `None`: no `recording` field; `Some(false)`: `"recording": null`.
    recording: Option<bool>,
    completed: bool,
    analytics: bool,
    asked_analytics: bool,
    max_ttl: Duration,
    margin: Duration,
    stale_if_error: Duration,
    in_progress_ttl: Duration,
}

fn cases() -> impl Strategy<Value = Case> {
    let answer = (
        -10_000_000i64..10_000_000,
        prop::option::of(-7200i64..7200),
        prop_oneof![-5_000i64..5_000, -7_200_000i64..(48 * 3_600_000)],
        prop::option::of(prop::bool::weighted(0.9)),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        any::<bool>(),
    );
    let policy = (
        1u64..(3 * 3600),
        0u64..900,
        prop_oneof![Just(0u64), 0u64..(3 * 3600)],
        prop_oneof![Just(0u64), 0u64..5_000],
    );
    (answer, policy).prop_map(
        |(
            (received, date, url_life_ms, recording, completed, analytics, asked_analytics),
            (max_ttl, margin, stale_if_error, in_progress_ms),
        )| Case {
            received,
            date,
            url_life_ms,
            recording,
            completed,
            analytics,
            asked_analytics,
            max_ttl: Duration::from_secs(max_ttl),
            margin: Duration::from_secs(margin),
            stale_if_error: Duration::from_secs(stale_if_error),
            in_progress_ttl: Duration::from_millis(in_progress_ms),
        },
    )
}

impl Case {
    fn policy(&self) -> StorePolicy {
        StorePolicy {
            max_ttl: self.max_ttl,
            expiry_margin: self.margin,
            statuses: vec!["completed".to_owned()],
            stale_if_error: self.stale_if_error,
            in_progress_ttl: self.in_progress_ttl,
            not_found_ttl: Duration::ZERO,
        }
    }

    fn received(&self) -> SystemTime {
        at_secs(self.received)
    }

    /// The instant the `Date` header names (whole seconds).
    fn date(&self) -> Option<SystemTime> {
        self.date.map(|skew| at_secs(self.received + skew))
    }

    fn expires_at(&self) -> SystemTime {
        let from = self.date().unwrap_or_else(|| self.received());
        let life = Duration::from_millis(self.url_life_ms.unsigned_abs());
        if self.url_life_ms >= 0 {
            from + life
        } else {
            from - life
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(date) = self.date() {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(date)).unwrap();
            headers.insert(header::DATE, value);
        }
        headers
    }

    fn body(&self) -> Vec<u8> {
        let expires_at = jiff::Timestamp::try_from(self.expires_at())
            .unwrap()
            .to_string();
        let mut data = json!({
            "id": "conv_prop",
            "status": if self.completed { "completed" } else { "in_progress" },
            "analytics": if self.analytics { json!({"interruptions": 0}) } else { Value::Null },
        });
        match self.recording {
            None => {}
            Some(false) => data["recording"] = Value::Null,
            Some(true) => {
                data["recording"] =
                    json!({"url": "https://r.example/x.mp3", "expires_at": expires_at})
            }
        }
        json!({ "data": data }).to_string().into_bytes()
    }

    /// `expires_at - (Date + 1 s) - margin` (the receive time without a
    /// `Date`), or `None` without a recording URL.
    fn url_bound(&self) -> Option<Duration> {
        if self.recording != Some(true) {
            return None;
        }
        let signed_at = self
            .date()
            .map_or_else(|| self.received(), |date| date + Duration::from_secs(1));
        Some(
            self.expires_at()
                .duration_since(signed_at)
                .unwrap_or(Duration::ZERO)
                .saturating_sub(self.margin),
        )
    }

    fn complete(&self) -> bool {
        self.completed && (self.analytics || !self.asked_analytics)
    }
}

proptest! {
    #[test]
    fn a_lifetime_never_outlives_its_url_nor_max_ttl(case in cases()) {
        let headers = case.headers();
        let body = case.body();
        let flags = Flags { analytics: case.asked_analytics, ..Flags::default() };
        let answer = Answer {
            status: StatusCode::OK,
            headers: &headers,
            body: &body,
            flags,
            received: case.received(),
        };
        let decision = case.policy().decide(&answer);
        let bound = case.url_bound();
        let micro = !case.in_progress_ttl.is_zero();
        // Whether it is stored at all: the documented rule.
        match (&decision, case.complete(), bound) {
            (Err(NoStoreReason::InProgress | NoStoreReason::AnalyticsPending), false, _) => {
                prop_assert!(!micro, "{decision:?}");
            }
            (Err(NoStoreReason::LifetimeTooShort), _, Some(bound)) => {
                prop_assert!(bound.is_zero(), "{decision:?} with {bound:?} left");
            }
            (Ok(_), complete, bound) => {
                prop_assert!(complete || micro);
                prop_assert!(bound.is_none_or(|b| !b.is_zero()));
            }
            (other, _, _) => prop_assert!(false, "unexpected {other:?} for {case:?}"),
        }
        let Ok(lifetime) = decision else { return Ok(()) };
        let (fresh, usable) = (lifetime.fresh_for, lifetime.usable_for);
        prop_assert!(fresh <= usable, "{lifetime:?}");
        match lifetime.kind {
            EntryKind::Complete => {
                prop_assert!(case.complete());
                prop_assert!(fresh <= case.max_ttl, "{lifetime:?}");
                prop_assert!(usable <= fresh + case.stale_if_error, "{lifetime:?}");
            }
            EntryKind::Provisional => {
                prop_assert!(!case.complete());
                prop_assert!(fresh <= case.in_progress_ttl, "{lifetime:?}");
                prop_assert_eq!(usable, fresh);
            }
            EntryKind::NotFound => prop_assert!(false, "a 200 stored as a 404"),
        }
        prop_assert_eq!(lifetime.hard_in.is_some(), bound.is_some());
        if let (Some(hard), Some(bound)) = (lifetime.hard_in, bound) {
            prop_assert!(hard <= bound, "{lifetime:?} past the URL bound {bound:?}");
            prop_assert!(fresh <= hard && usable <= hard, "{lifetime:?}");
        } else {
            prop_assert_eq!(fresh, if case.complete() { case.max_ttl } else { case.in_progress_ttl });
        }
    }
}

/// How one flag may be written: its name and its value, each in any of the
/// spellings that mean the same.
#[derive(Debug, Clone)]
struct Spelling {
    name: usize,
    value: usize,
    present: bool,
}

const NAMES: [[&str; 4]; 3] = [
    [
        "include_transcript",
        "include_%74ranscript",
        "%69nclude_transcript",
        "include%5Ftranscript",
    ],
    [
        "include_recording",
        "include_%72ecording",
        "%69nclude_recording",
        "include%5frecording",
    ],
    [
        "include_analytics",
        "include_%61nalytics",
        "%69nclude_analytics",
        "include%5Fanalytics",
    ],
];
const TRUE: [&str; 7] = ["true", "TRUE", "True", "tRuE", "1", "%74rue", "tru%45"];
const FALSE: [&str; 7] = ["false", "FALSE", "False", "fAlSe", "0", "%66alse", "%30"];

fn spelling() -> impl Strategy<Value = Spelling> {
    (0..4usize, 0..7usize, any::<bool>()).prop_map(|(name, value, present)| Spelling {
        name,
        value,
        present,
    })
}

/// The query: each flag that is false or chosen present, in `order`, with
/// empty pairs sprinkled in where `gaps` says.
fn spell(flags: [bool; 3], spellings: &[Spelling], order: &[usize], gaps: &[bool]) -> String {
    let mut pairs = Vec::new();
    for (&index, &gap) in order.iter().zip(gaps) {
        let spelling = &spellings[index];
        if flags[index] && !spelling.present {
            continue;
        }
        let value = if flags[index] { TRUE } else { FALSE }[spelling.value];
        pairs.push(format!("{}={value}", NAMES[index][spelling.name]));
        if gap {
            pairs.push(String::new());
        }
    }
    pairs.join("&")
}

fn key(partition: Partition, flags: Flags) -> CacheKey {
    CacheKey {
        partition,
        id: ConversationId::parse("conv_prop").unwrap(),
        flags,
    }
}

proptest! {
    #[test]
    fn the_key_does_not_depend_on_flag_order_or_spelling(
        flags in any::<[bool; 3]>(),
        first in prop::collection::vec(spelling(), 3),
        second in prop::collection::vec(spelling(), 3),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
        gaps in any::<[bool; 3]>(),
    ) {
        let expected = Flags { transcript: flags[0], recording: flags[1], analytics: flags[2] };
        let one = spell(flags, &first, &[0, 1, 2], &[false; 3]);
        let other = spell(flags, &second, &order, &gaps);
        let partition = Partition::Key(Fingerprint::of(b"Bearer sk_prop"));
        for query in [&one, &other] {
            prop_assert_eq!(read_flags(Some(query)), Ok(expected), "{}", query);
        }
        let canonical = read_flags(Some(&expected.upstream_query())).unwrap();
        prop_assert_eq!(
            key(partition, read_flags(Some(&one)).unwrap()),
            key(partition, read_flags(Some(&other)).unwrap())
        );
        prop_assert_eq!(key(partition, canonical), key(partition, expected));
        if flags == [true; 3] {
            prop_assert_eq!(read_flags(None), Ok(expected));
        }
    }

    #[test]
    fn any_readable_query_reads_back_from_what_is_sent_upstream(query in ".{0,64}") {
        if let Ok(flags) = read_flags(Some(&query)) {
            prop_assert_eq!(read_flags(Some(&flags.upstream_query())), Ok(flags));
        }
    }
}

fn authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    headers
}

/// Header-safe credential text: visible ASCII, spaces inside.
fn credential_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{1,40}".prop_map(|token| format!("Bearer {token}")),
        "[!-~]{1,40}".prop_map(|token| format!("bearer {token}")),
        "[!-~]{1,40}".prop_map(|token| format!("Basic {token}")),
        "[!-~][ -~]{0,60}[!-~]",
    ]
}

proptest! {
    #[test]
    fn the_key_always_differs_across_credentials(
        credentials in prop::collection::hash_set(credential_text(), 2..6),
        flags in any::<[bool; 3]>(),
    ) {
        let flags = Flags { transcript: flags[0], recording: flags[1], analytics: flags[2] };
        let auth = Authenticator::PassThrough;
        let anonymous = auth.credential(&HeaderMap::new()).unwrap().partition;
        prop_assert_eq!(anonymous, Partition::Anonymous);
        let mut keys = HashSet::new();
        prop_assert!(keys.insert(key(anonymous, flags)));
        for text in &credentials {
            let credential = auth.credential(&authorization(text)).unwrap();
            // The same credential always reads the same partition...
            let again = auth.credential(&authorization(text)).unwrap();
            prop_assert_eq!(credential.partition, again.partition);
            // ...which holds a digest, never the credential itself.
            if text.len() >= 12 {
                let shown = format!("{:?}", credential.partition);
                prop_assert!(!shown.contains(text.as_str()), "{}", shown);
            }
            prop_assert_eq!(credential.upstream.as_ref().map(|v| v.as_bytes()), Some(text.as_bytes()));
            // Every other credential, and no credential, is another key.
            prop_assert!(keys.insert(key(credential.partition, flags)), "{text:?} shares a key");
        }
    }

    #[test]
    fn with_the_proxy_key_only_listed_tokens_get_in_and_never_travel(
        listed in prop::collection::hash_set("[!-~]{1,40}", 1..4),
        other in "[!-~]{1,40}",
    ) {
        prop_assume!(!listed.contains(&other));
        let auth = Authenticator::ProxyKey {
            key: Secret::new(HeaderValue::from_static("Bearer sk_proxy_key")),
            client_tokens: listed.iter().map(|t| Fingerprint::of(t.as_bytes()).digest()).collect(),
            allow_anonymous: false,
        };
        for token in &listed {
            let credential = auth.credential(&authorization(&format!("Bearer {token}"))).unwrap();
            prop_assert_eq!(credential.partition, Partition::Shared);
            prop_assert_eq!(credential.upstream.unwrap(), "Bearer sk_proxy_key");
        }
        let refused = auth.credential(&authorization(&format!("Bearer {other}")));
        prop_assert_eq!(refused.unwrap_err(), ProxyError::Unauthenticated);
        prop_assert_eq!(auth.credential(&HeaderMap::new()).unwrap_err(), ProxyError::Unauthenticated);
    }
}
