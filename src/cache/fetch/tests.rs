//! Unit tests of the fetch procedure: scripted fetches (plain futures returning set answers) and a clock moved by hand.

use std::sync::atomic::{AtomicBool, Ordering};

use http::StatusCode;

use super::*;
use crate::cache::policy::{Lifetime, StorePolicy};
use crate::domain::{ConversationId, Fingerprint, Flags, Partition};

const SECOND: Duration = Duration::from_secs(1);

const COMPLETED: &str =
    r#"{"data":{"id":"c1","status":"completed","analytics":{"talk_ratio":0.5}}}"#;
const IN_PROGRESS: &str = r#"{"data":{"id":"c1","status":"in_progress","analytics":null}}"#;
const NOT_FOUND: &str =
    r#"{"error":{"type":"not_found","code":"conversation_not_found","message":"no"}}"#;

/// Rules with a 100 s fresh life and an hour of stale-if-error.
fn rules(in_progress_ttl: Duration, not_found_ttl: Duration) -> CacheRules {
    CacheRules {
        policy: Arc::new(StorePolicy {
            max_ttl: 100 * SECOND,
            expiry_margin: Duration::ZERO,
            statuses: vec!["completed".into()],
            stale_if_error: 3600 * SECOND,
            in_progress_ttl,
            not_found_ttl,
        }),
        refresh_ahead: 0.1,
        encodings: Arc::new([]),
    }
}

fn plain_rules() -> CacheRules {
    rules(Duration::ZERO, Duration::ZERO)
}

fn fetcher(clock: &Clock) -> Fetcher {
    Fetcher {
        store: Store::new(1 << 24, |_| {}),
        metrics: Arc::new(Metrics::new()),
        precompressor: Arc::new(Precompressor::new()),
        shared: None,
        clock: clock.clone(),
    }
}

fn key(partition: Partition, id: &str, flags: Flags) -> CacheKey {
    CacheKey {
        partition,
        id: ConversationId::parse(id).unwrap(),
        flags,
    }
}

fn alice() -> Partition {
    Partition::Key(Fingerprint::of(b"Bearer alice"))
}

fn no_transcript() -> Flags {
    Flags {
        transcript: false,
        ..Flags::default()
    }
}

/// A complete entry received at `at`: fresh for 100 s, usable for 1000 s.
fn entry(at: Instant) -> Arc<CachedResponse> {
    Arc::new(CachedResponse::new(
        StatusCode::OK,
        &HeaderMap::new(),
        Bytes::from_static(COMPLETED.as_bytes()),
        at,
        Lifetime {
            kind: EntryKind::Complete,
            fresh_for: 100 * SECOND,
            usable_for: 1000 * SECOND,
            hard_in: None,
        },
    ))
}

async fn hold(fetcher: &Fetcher, key: &CacheKey, entry: &Arc<CachedResponse>) {
    let epoch = fetcher.store.epoch(&key.id);
    let inserted = fetcher
        .store
        .insert_unless_superseded(key.clone(), Arc::clone(entry), epoch)
        .await;
    assert_eq!(inserted, Inserted::New);
}

async fn held(fetcher: &Fetcher, key: &CacheKey) -> Option<Arc<CachedResponse>> {
    fetcher.store.get(key, fetcher.clock.now()).await
}

/// An answer with `status` and `body`, received now by `clock`.
fn answer(clock: &Clock, status: u16, body: &'static str) -> Fetched {
    Fetched {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
        received_at: SystemTime::now(),
        received_instant: clock.now(),
        elapsed: Duration::from_millis(3),
    }
}

/// A scripted fetch: yields `result` when polled.
fn scripted(
    result: Result<Fetched, FetchError>,
) -> impl Future<Output = Result<Fetched, FetchError>> {
    std::future::ready(result)
}

async fn run(
    fetcher: &Fetcher,
    key: &CacheKey,
    purpose: Purpose,
    fetch: impl Future<Output = Result<Fetched, FetchError>>,
    rules: CacheRules,
) -> FetchOutcome {
    fetcher
        .clone()
        .run(key.clone(), purpose, fetch, rules)
        .await
}

fn metrics_text(fetcher: &Fetcher) -> String {
    fetcher.metrics.encode(0, 0)
}

#[tokio::test]
async fn a_stale_entry_stands_in_for_an_unreachable_failing_or_limiting_upstream() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    let old = entry(clock.now());
    hold(&fetcher, &key, &old).await;
    clock.advance(150 * SECOND);
    let failures = [
        (Err(FetchError::Unavailable), None),
        (Ok(answer(&clock, 503, "{}")), Some(503)),
        (Ok(answer(&clock, 429, "{}")), Some(429)),
    ];
    for (result, fwd_status) in failures {
        match run(
            &fetcher,
            &key,
            Purpose::Demand,
            scripted(result),
            plain_rules(),
        )
        .await
        {
            FetchOutcome::Stale { entry, failure } => {
                assert!(Arc::ptr_eq(&entry, &old));
                assert_eq!(failure.status().map(|s| s.as_u16()), fwd_status);
            }
            other => panic!("{fwd_status:?}: not a stand-in: {other:?}"),
        }
    }
    assert!(held(&fetcher, &key).await.is_some(), "the entry is kept");
}

#[tokio::test]
async fn an_entry_that_dies_while_the_upstream_fails_does_not_stand_in() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    hold(&fetcher, &key, &entry(clock.now())).await;
    clock.advance(150 * SECOND);
    let slow_failure = {
        let clock = clock.clone();
        async move {
            // The upstream takes until past the entry's usable time.
            clock.advance(900 * SECOND);
            Err(FetchError::Timeout)
        }
    };
    let outcome = run(&fetcher, &key, Purpose::Demand, slow_failure, plain_rules()).await;
    assert!(
        matches!(outcome, FetchOutcome::Failed(FetchError::Timeout)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_404_drops_every_entry_of_that_credential_and_id_and_no_other() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let asked = key(alice(), "c1", Flags::default());
    let sibling = key(alice(), "c1", no_transcript());
    let other_credential = key(Partition::Anonymous, "c1", Flags::default());
    let other_id = key(alice(), "c2", Flags::default());
    hold(&fetcher, &asked, &entry(clock.now())).await;
    clock.advance(150 * SECOND);
    for kept in [&sibling, &other_credential, &other_id] {
        hold(&fetcher, kept, &entry(clock.now())).await;
    }
    let gone = Ok(answer(&clock, 404, NOT_FOUND));
    let outcome = run(
        &fetcher,
        &asked,
        Purpose::Demand,
        scripted(gone),
        plain_rules(),
    )
    .await;
    let FetchOutcome::Answered {
        response,
        stored,
        revalidated,
    } = outcome
    else {
        panic!("not answered: {outcome:?}");
    };
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(
        stored.unwrap_err(),
        NoStoreReason::Status(StatusCode::NOT_FOUND)
    );
    assert!(revalidated);
    assert!(held(&fetcher, &asked).await.is_none());
    assert!(
        held(&fetcher, &sibling).await.is_none(),
        "every flag variant"
    );
    assert!(held(&fetcher, &other_credential).await.is_some());
    assert!(held(&fetcher, &other_id).await.is_some());
}

#[tokio::test]
async fn a_404_that_drops_entries_is_itself_remembered_when_asked() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    hold(&fetcher, &key, &entry(clock.now())).await;
    clock.advance(150 * SECOND);
    let remember_404s = rules(Duration::ZERO, 5 * SECOND);
    let gone = Ok(answer(&clock, 404, NOT_FOUND));
    let outcome = run(
        &fetcher,
        &key,
        Purpose::Demand,
        scripted(gone),
        remember_404s,
    )
    .await;
    let FetchOutcome::Answered { stored, .. } = outcome else {
        panic!("not answered: {outcome:?}");
    };
    let stored = stored.expect("our own drop is not a purge the answer yields to");
    assert_eq!(stored.kind(), EntryKind::NotFound);
    let now_held = held(&fetcher, &key).await.unwrap();
    assert!(Arc::ptr_eq(&now_held, &stored));
}

#[tokio::test]
async fn a_403_drops_only_the_entry_it_answered_for() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let asked = key(alice(), "c1", Flags::default());
    let sibling = key(alice(), "c1", no_transcript());
    hold(&fetcher, &asked, &entry(clock.now())).await;
    clock.advance(150 * SECOND);
    hold(&fetcher, &sibling, &entry(clock.now())).await;
    let refused = Ok(answer(&clock, 403, "{}"));
    let outcome = run(
        &fetcher,
        &asked,
        Purpose::Demand,
        scripted(refused),
        plain_rules(),
    )
    .await;
    assert!(
        matches!(
            outcome,
            FetchOutcome::Answered {
                revalidated: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(held(&fetcher, &asked).await.is_none());
    assert!(held(&fetcher, &sibling).await.is_some());
}

#[tokio::test]
async fn a_refresh_replaces_its_entry_with_a_complete_answer() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    let old = entry(clock.now());
    hold(&fetcher, &key, &old).await;
    clock.advance(95 * SECOND);
    let fresh = Ok(answer(&clock, 200, COMPLETED));
    let outcome = run(
        &fetcher,
        &key,
        Purpose::Refresh,
        scripted(fresh),
        plain_rules(),
    )
    .await;
    let FetchOutcome::Answered { stored, .. } = outcome else {
        panic!("not answered: {outcome:?}");
    };
    let stored = stored.expect("a complete answer is stored");
    let now_held = held(&fetcher, &key).await.unwrap();
    assert!(Arc::ptr_eq(&now_held, &stored));
    assert!(!Arc::ptr_eq(&now_held, &old));
    let text = metrics_text(&fetcher);
    assert!(text.contains("ayra_cache_refreshes_total{result=\"stored\"} 1"));
    assert!(text.contains("ayra_cache_evictions_total{cause=\"replaced\"} 1"));
}

#[tokio::test]
async fn a_refresh_keeps_its_entry_unless_the_answer_is_complete() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    let old = entry(clock.now());
    hold(&fetcher, &key, &old).await;
    clock.advance(95 * SECOND);
    // On demand an in-progress answer would be micro-cached: not by a refresh.
    let micro_caching = rules(5 * SECOND, Duration::ZERO);
    let answers = [
        Ok(answer(&clock, 200, IN_PROGRESS)),
        Ok(answer(&clock, 503, "{}")),
        Err(FetchError::Timeout),
    ];
    for result in answers {
        let rules = micro_caching.clone();
        let outcome = run(&fetcher, &key, Purpose::Refresh, scripted(result), rules).await;
        assert!(
            !matches!(&outcome, FetchOutcome::Answered { stored: Ok(_), .. }),
            "{outcome:?}"
        );
        let still = held(&fetcher, &key).await.unwrap();
        assert!(Arc::ptr_eq(&still, &old), "replaced after {outcome:?}");
    }
    let text = metrics_text(&fetcher);
    assert!(text.contains("ayra_cache_refreshes_total{result=\"not_stored\"} 2"));
    assert!(text.contains("ayra_cache_refreshes_total{result=\"error\"} 1"));
}

#[tokio::test]
async fn a_purge_during_the_fetch_keeps_its_answer_out_of_the_store() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    let purge_meanwhile = {
        let store = fetcher.store.clone();
        let (id, answer) = (key.id.clone(), answer(&clock, 200, COMPLETED));
        async move {
            store
                .purge_where(PurgeScope::Conversation(&id), |held| held.id == id)
                .await;
            Ok(answer)
        }
    };
    let outcome = run(
        &fetcher,
        &key,
        Purpose::Demand,
        purge_meanwhile,
        plain_rules(),
    )
    .await;
    let FetchOutcome::Answered { stored, .. } = outcome else {
        panic!("not answered: {outcome:?}");
    };
    assert_eq!(stored.unwrap_err(), NoStoreReason::Superseded);
    assert!(held(&fetcher, &key).await.is_none());
}

#[tokio::test]
async fn a_demand_fetch_serves_an_entry_stored_since_its_lookup_without_calling() {
    let clock = Clock::manual(Instant::now());
    let fetcher = fetcher(&clock);
    let key = key(alice(), "c1", Flags::default());
    let stored_meanwhile = entry(clock.now());
    hold(&fetcher, &key, &stored_meanwhile).await;
    let called = Arc::new(AtomicBool::new(false));
    let fetch = {
        let called = Arc::clone(&called);
        async move {
            called.store(true, Ordering::Relaxed);
            Err(FetchError::Unavailable)
        }
    };
    let outcome = run(&fetcher, &key, Purpose::Demand, fetch, plain_rules()).await;
    match outcome {
        FetchOutcome::Cached(entry) => assert!(Arc::ptr_eq(&entry, &stored_meanwhile)),
        other => panic!("not served from the store: {other:?}"),
    }
    assert!(!called.load(Ordering::Relaxed), "the upstream was called");
}
