//! Micro-benchmarks of the cache's per-request pieces: the key, the storing policy, an entry's body.
//!
//! `cargo bench --bench cache`. These time one piece in isolation on a warm
//! CPU; `bench/run` measures the whole proxy against nginx.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use ayra_cache::cache::entry::CachedResponse;
use ayra_cache::cache::key::{read_flags, CacheKey};
use ayra_cache::cache::policy::{Answer, StorePolicy};
use ayra_cache::cache::stored_body::StoredBody;
use ayra_cache::domain::{ConversationId, Fingerprint, Flags, Partition};
use bytes::{Buf, Bytes};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// A completed conversation of about 5 KB, as the Ayra API sends it.
fn conversation_body(received: SystemTime) -> Vec<u8> {
    let expires = humantime::format_rfc3339_seconds(received + Duration::from_secs(3600));
    let messages: Vec<_> = (0..40)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "agent" } else { "caller" },
                "text": "Thanks for calling, I can help you move that appointment to Tuesday.",
                "timestamp": i * 7,
            })
        })
        .collect();
    let body = serde_json::json!({"data": {
        "id": "conv_8f2b6c1e", "agent_id": "agent_42", "caller_number": "+15555550123",
        "status": "completed", "duration": 312, "sentiment": "positive", "sentiment_score": 0.82,
        "transcript": {"full_text": "...", "messages": messages, "word_count": 480},
        "recording": {"url": "https://recordings.example/conv_8f2b6c1e.mp3?sig=abc",
                      "duration": 312, "expires_at": expires.to_string()},
        "analytics": {"talk_ratio": 0.48, "interruptions": 2, "topics": ["billing", "scheduling"]},
        "integrations": {"crm": "synced"}
    }});
    serde_json::to_vec(&body).unwrap()
}

fn upstream_headers(received: SystemTime) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let date = httpdate::fmt_http_date(received);
    headers.insert(header::DATE, HeaderValue::from_str(&date).unwrap());
    headers
}

fn key(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    group.bench_function("read_flags", |b| {
        b.iter(|| {
            read_flags(black_box(Some(
                "include_transcript=false&include_recording=1",
            )))
        })
    });
    group.bench_function("fingerprint", |b| {
        b.iter(|| {
            Fingerprint::of(black_box(
                b"Bearer sk_live_4f9a2c7d1e8b3a6f5c0d9e2b7a4c1f8e",
            ))
        })
    });
    let stored = CacheKey {
        partition: Partition::Key(Fingerprint::of(b"Bearer sk_live_example")),
        id: ConversationId::parse("conv_8f2b6c1e").unwrap(),
        flags: Flags::default(),
    };
    group.bench_function("build_and_compare", |b| {
        b.iter(|| {
            let key = CacheKey {
                partition: Partition::Key(Fingerprint::of(b"Bearer sk_live_example")),
                id: ConversationId::parse(black_box("conv_8f2b6c1e")).unwrap(),
                flags: read_flags(None).unwrap(),
            };
            key == stored
        })
    });
    group.finish();
}

fn policy(c: &mut Criterion) {
    let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let body = conversation_body(received);
    let headers = upstream_headers(received);
    let policy = StorePolicy {
        max_ttl: Duration::from_secs(3600),
        expiry_margin: Duration::from_secs(60),
        statuses: vec!["completed".to_owned()],
        stale_if_error: Duration::from_secs(3600),
        in_progress_ttl: Duration::ZERO,
        not_found_ttl: Duration::ZERO,
    };
    let answer = Answer {
        status: StatusCode::OK,
        headers: &headers,
        body: &body,
        flags: Flags::default(),
        received,
    };
    assert!(
        policy.decide(&answer).is_ok(),
        "the sample body is storable"
    );
    c.bench_function(&format!("policy/decide_{}_bytes", body.len()), |b| {
        b.iter(|| policy.decide(black_box(&answer)))
    });
}

fn entry(c: &mut Criterion) {
    let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let body = Bytes::from(conversation_body(received));
    let headers = upstream_headers(received);
    let lifetime = StorePolicy {
        max_ttl: Duration::from_secs(3600),
        expiry_margin: Duration::from_secs(60),
        statuses: vec!["completed".to_owned()],
        stale_if_error: Duration::ZERO,
        in_progress_ttl: Duration::ZERO,
        not_found_ttl: Duration::ZERO,
    }
    .decide(&Answer {
        status: StatusCode::OK,
        headers: &headers,
        body: &body,
        flags: Flags::default(),
        received,
    })
    .unwrap();
    let mut group = c.benchmark_group("entry");
    group.bench_function(format!("store_{}_byte_answer", body.len()), |b| {
        b.iter(|| {
            CachedResponse::new(
                StatusCode::OK,
                &headers,
                body.clone(),
                Instant::now(),
                lifetime,
            )
        })
    });
    let stored = StoredBody::copy_from(&body);
    group.bench_function("body_to_send", |b| {
        b.iter(|| black_box(stored.to_buf()).remaining())
    });
    group.finish();
}

criterion_group!(benches, key, policy, entry);
criterion_main!(benches);
