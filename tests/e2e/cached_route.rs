//! The cached route: HIT and MISS, the key, the built upstream request, HEAD, age.

use serde_json::{json, Value};

use crate::app::spawn_pair;

pub const TOKEN: &str = "sk_test_alpha";

/// A response header as text ("" when absent).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The stand-in's serial in a conversation body: which upstream answer this is.
pub fn serial(body: &Value) -> u64 {
    body["data"]["integrations"]["standin_serial"]
        .as_u64()
        .expect("standin_serial in body")
}

#[tokio::test]
async fn a_second_read_is_a_hit_with_the_first_body() {
    let (standin, app) = spawn_pair(&[]).await;
    let first = app.get("/v1/conversations/conv_1", Some(TOKEN)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert_eq!(
        header(&first, "cache-status"),
        "ayra-cache; fwd=miss; stored"
    );
    let first_bytes = first.bytes().await.unwrap();
    let first_body: Value = serde_json::from_slice(&first_bytes).unwrap();

    let second = app.get("/v1/conversations/conv_1", Some(TOKEN)).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-cache"), "HIT");
    assert!(header(&second, "cache-status").starts_with("ayra-cache; hit; ttl="));
    assert_eq!(header(&second, "age"), "0");
    assert_eq!(header(&second, "content-type"), "application/json");
    let second_bytes = second.bytes().await.unwrap();
    assert_eq!(
        second_bytes, first_bytes,
        "byte for byte, across the stored parts"
    );
    let second_body: Value = serde_json::from_slice(&second_bytes).unwrap();
    assert_eq!(serial(&first_body), serial(&second_body));
    assert_eq!(standin.requests_for("conv_1").await, 1);
}

#[tokio::test]
async fn head_shares_the_key_and_gets_no_body() {
    let (standin, app) = spawn_pair(&[]).await;
    let head = app
        .client
        .head(app.url("/v1/conversations/conv_h"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "x-cache"), "MISS");
    let length: usize = header(&head, "content-length").parse().unwrap();
    assert!(length > 1000);
    assert!(head.bytes().await.unwrap().is_empty());

    let get = app.get("/v1/conversations/conv_h", Some(TOKEN)).await;
    assert_eq!(header(&get, "x-cache"), "HIT");
    assert_eq!(get.bytes().await.unwrap().len(), length);

    let head = app
        .client
        .head(app.url("/v1/conversations/conv_h"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "x-cache"), "HIT");
    assert_eq!(header(&head, "content-length"), length.to_string());
    assert!(header(&head, "age").parse::<u64>().is_ok());
    assert_eq!(standin.requests_for("conv_h").await, 1);
}

#[tokio::test]
async fn flags_are_part_of_the_key_and_absent_means_true() {
    let (standin, app) = spawn_pair(&[]).await;
    let path = "/v1/conversations/conv_f";
    assert_eq!(header(&app.get(path, Some(TOKEN)).await, "x-cache"), "MISS");
    for same in [
        "?include_transcript=true&include_recording=true&include_analytics=true",
        "?include_analytics=TRUE&include_transcript=1",
        "?include_recording=True",
    ] {
        let response = app.get(&format!("{path}{same}"), Some(TOKEN)).await;
        assert_eq!(header(&response, "x-cache"), "HIT", "{same}");
    }
    let without = app
        .get(&format!("{path}?include_transcript=false"), Some(TOKEN))
        .await;
    assert_eq!(header(&without, "x-cache"), "MISS");
    let body: Value = without.json().await.unwrap();
    assert!(body["data"].get("transcript").is_none());
    let again = app
        .get(&format!("{path}?include_transcript=0"), Some(TOKEN))
        .await;
    assert_eq!(header(&again, "x-cache"), "HIT");
    assert_eq!(standin.requests_for("conv_f").await, 2);
}

#[tokio::test]
async fn unreadable_queries_bypass_the_cache_and_travel_as_received() {
    let (standin, app) = spawn_pair(&[]).await;
    let cases = [
        (
            "include_transcript=true&include_transcript=false",
            "repeated_flag",
        ),
        ("include_recording=yes", "unreadable_flag"),
        ("include_analytics=false&page=2", "unknown_parameter"),
    ];
    for (query, detail) in cases {
        for _ in 0..2 {
            let response = app
                .get(&format!("/v1/conversations/conv_b?{query}"), Some(TOKEN))
                .await;
            assert_eq!(header(&response, "x-cache"), "BYPASS", "{query}");
            assert_eq!(
                header(&response, "cache-status"),
                format!("ayra-cache; fwd=bypass; detail={detail}")
            );
        }
        let seen = standin.stats().await.requests;
        assert_eq!(seen.last().unwrap().query, query);
    }
    // Six requests, six upstream calls, and nothing stored for the plain key.
    assert_eq!(standin.requests_for("conv_b").await, 6);
    let plain = app.get("/v1/conversations/conv_b", Some(TOKEN)).await;
    assert_eq!(header(&plain, "x-cache"), "MISS");
}

#[tokio::test]
async fn the_upstream_request_is_built_not_copied() {
    let (standin, app) = spawn_pair(&[]).await;
    let response = app
        .client
        .get(app.url("/v1/conversations/conv_built?include_recording=0"))
        .bearer_auth(TOKEN)
        .header("cookie", "session=abc")
        .header("x-forwarded-host", "evil.example")
        .header("x-custom", "1")
        .header("accept", "text/html")
        .header("user-agent", "client/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stats = standin.stats().await;
    let seen = stats.requests.last().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/v1/conversations/conv_built");
    assert_eq!(
        seen.query,
        "include_transcript=true&include_recording=false&include_analytics=true"
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert!(seen
        .header("user-agent")
        .unwrap()
        .starts_with("ayra-cache/"));
    let host = standin.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(seen.header("host"), Some(host.as_str()));
    for absent in ["cookie", "x-forwarded-host", "x-custom"] {
        assert_eq!(seen.header(absent), None, "{absent} travelled");
    }
}

#[tokio::test]
async fn the_upstream_age_is_added_to_the_time_held() {
    let (standin, app) = spawn_pair(&[]).await;
    standin.set("conv_age", json!({"age": 100})).await;
    app.get("/v1/conversations/conv_age", Some(TOKEN)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let hit = app.get("/v1/conversations/conv_age", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let age: u64 = header(&hit, "age").parse().unwrap();
    assert!((101..=102).contains(&age), "age {age}");
}

#[tokio::test]
async fn hop_by_hop_headers_from_upstream_never_reach_the_client() {
    let (standin, app) = spawn_pair(&[]).await;
    standin
        .set(
            "conv_hop",
            json!({"extra_headers": [
                ["connection", "x-secret-hop"], ["x-secret-hop", "1"],
                ["keep-alive", "timeout=5"], ["proxy-authenticate", "Basic"],
                ["upgrade", "h2c"], ["trailer", "x-sum"], ["x-end-to-end", "kept"]
            ]}),
        )
        .await;
    let miss = app.get("/v1/conversations/conv_hop", Some(TOKEN)).await;
    assert_eq!(header(&miss, "x-cache"), "MISS");
    let hit = app.get("/v1/conversations/conv_hop", Some(TOKEN)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    for response in [&miss, &hit] {
        for name in [
            "x-secret-hop",
            "keep-alive",
            "proxy-authenticate",
            "upgrade",
            "trailer",
        ] {
            assert_eq!(header(response, name), "", "{name} passed");
        }
    }
    assert_eq!(header(&miss, "x-end-to-end"), "kept");
}
