//! SPEC section 9, the representations: strong ETags, `If-None-Match` and 304, precompressed bodies.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::app::{spawn_pair, TestApp};
use crate::cached_route::{header, TOKEN};

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.get(app.url(path)).bearer_auth(TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Reads until the entry's `encoding` variant is ready (it is made in the background).
async fn compressed(app: &TestApp, path: &str, encoding: &str) -> reqwest::Response {
    for _ in 0..100 {
        let response = get(app, path, &[("accept-encoding", encoding)]).await;
        if header(&response, "content-encoding") == encoding {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {encoding} variant of {path} after 2 s");
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(bytes, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        "zstd" => return zstd::decode_all(bytes).unwrap(),
        other => panic!("{other}"),
    };
    out
}

#[tokio::test]
async fn stored_answers_carry_a_strong_etag_and_if_none_match_gets_304() {
    let (standin, app) = spawn_pair(&[]).await;
    let path = "/v1/conversations/conv_e";
    let miss = get(&app, path, &[]).await;
    let etag = header(&miss, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let hit = get(&app, path, &[]).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    assert_eq!(header(&hit, "etag"), etag, "the same across hits");

    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    for condition in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let response = get(&app, path, &[("if-none-match", condition)]).await;
        assert_eq!(response.status(), 304, "{condition}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(header(&response, "cache-status").starts_with("ayra-cache; hit"));
        assert!(header(&response, "age").parse::<u64>().is_ok());
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let changed = get(&app, path, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(changed.status(), 200);
    assert_eq!(standin.requests_for("conv_e").await, 1);
}

#[tokio::test]
async fn a_just_fetched_answer_is_a_304_too() {
    let (standin, app) = spawn_pair(&[]).await;
    // The client cannot know the ETag of an answer not yet fetched; `*`
    // matches whatever it is, and the stored answer is compared on the spot.
    standin.set("conv_k", serde_json::json!({"age": 40})).await;
    let fresh = get(&app, "/v1/conversations/conv_k", &[("if-none-match", "*")]).await;
    assert_eq!(fresh.status(), 304);
    assert_eq!(header(&fresh, "x-cache"), "MISS");
    // Like a HIT's 304, it carries the entry's age: the upstream's own plus
    // the (sub-second) time held.
    assert_eq!(header(&fresh, "age"), "40");
    assert_eq!(
        header(&fresh, "cache-status"),
        "ayra-cache; fwd=miss; stored"
    );
    let etag = header(&fresh, "etag");
    assert!(fresh.bytes().await.unwrap().is_empty());
    let hit = get(&app, "/v1/conversations/conv_k", &[]).await;
    assert_eq!(
        header(&hit, "etag"),
        etag,
        "the 304 named the stored representation"
    );
    // An answer that was not stored has no ETag of ours to match.
    standin
        .set("conv_live", serde_json::json!({"status": "in_progress"}))
        .await;
    let live = get(
        &app,
        "/v1/conversations/conv_live",
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(live.status(), 200);
    assert_eq!(standin.requests_for("conv_k").await, 1);
}

#[tokio::test]
async fn each_accepted_coding_gets_its_precompressed_body() {
    let (standin, app) = spawn_pair(&[("cache.compression", "[\"br\", \"gzip\", \"zstd\"]")]).await;
    let path = "/v1/conversations/conv_z";
    let identity = get(&app, path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&identity, "x-cache"), "MISS");
    assert_eq!(header(&identity, "vary"), "accept-encoding");
    let identity_etag = header(&identity, "etag");
    let identity_body = identity.bytes().await.unwrap();

    let mut etags = vec![identity_etag.clone()];
    for encoding in ["gzip", "br", "zstd"] {
        let response = compressed(&app, path, encoding).await;
        assert_eq!(header(&response, "x-cache"), "HIT");
        assert_eq!(header(&response, "vary"), "accept-encoding");
        let etag = header(&response, "etag");
        let bytes = response.bytes().await.unwrap();
        assert!(
            bytes.len() < identity_body.len() / 2,
            "{encoding}: {} bytes",
            bytes.len()
        );
        assert_eq!(
            decode(encoding, &bytes),
            identity_body,
            "{encoding} decodes to the body"
        );
        let again = get(&app, path, &[("accept-encoding", encoding)]).await;
        assert_eq!(header(&again, "etag"), etag, "stable across hits");
        let not_modified = get(
            &app,
            path,
            &[("accept-encoding", encoding), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(not_modified.status(), 304);
        etags.push(etag);
    }
    etags.sort();
    etags.dedup();
    assert_eq!(etags.len(), 4, "an ETag per encoding");
    assert_eq!(standin.requests_for("conv_z").await, 1);

    let cases = [
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("br;q=0.5, zstd;q=0.5, gzip;q=0.1", "br"),
        ("*", "br"),
        ("br;q=0, *", "gzip"),
        ("gzip;q=0.5, identity", ""),
        ("identity", ""),
        ("deflate", ""),
        ("", ""),
    ];
    for (accept, expected) in cases {
        let response = get(&app, path, &[("accept-encoding", accept)]).await;
        assert_eq!(header(&response, "content-encoding"), expected, "{accept}");
    }
    let plain = app.get(path, Some(TOKEN)).await;
    assert_eq!(
        header(&plain, "content-encoding"),
        "",
        "no Accept-Encoding: identity"
    );
    assert_eq!(header(&plain, "etag"), identity_etag);
}

#[tokio::test]
async fn small_bodies_pass_through_and_compression_can_be_off() {
    let (_standin, app) = spawn_pair(&[]).await;
    let small = "/v1/conversations/conv_small?include_transcript=false&include_recording=false&include_analytics=false";
    get(&app, small, &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = get(&app, small, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(header(&response, "x-cache"), "HIT");
    assert!(response.content_length().unwrap() < 1024);
    assert_eq!(header(&response, "content-encoding"), "");
    assert_eq!(header(&response, "vary"), "");

    let echo = get(&app, "/v1/agents", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        header(&echo, "content-encoding"),
        "",
        "pass-through is untouched"
    );
    let echo: Value = echo.json().await.unwrap();
    assert!(echo["echo"]["headers"]
        .to_string()
        .contains("accept-encoding"));

    let (_standin, off) = spawn_pair(&[("cache.compression", "[]")]).await;
    let path = "/v1/conversations/conv_off";
    get(&off, path, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = get(&off, path, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(header(&response, "x-cache"), "HIT");
    assert_eq!(header(&response, "content-encoding"), "");
    assert_eq!(header(&response, "vary"), "");
}

#[tokio::test]
async fn head_gets_the_compressed_headers() {
    let (_standin, app) = spawn_pair(&[]).await;
    let path = "/v1/conversations/conv_hz";
    let length = compressed(&app, path, "gzip")
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let head = app
        .client
        .head(app.url(path))
        .bearer_auth(TOKEN)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "content-encoding"), "gzip");
    assert_eq!(header(&head, "content-length"), length.to_string());
}
