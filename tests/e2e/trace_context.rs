//! SPEC section 13: request ids and W3C trace context, from the client's request to the stand-in's record.
//!
//! The `traceparent` checks here are the W3C Trace Context rules themselves
//! (version `00`, lowercase hex, lengths, no all-zero id), written out in
//! [`W3cTraceParent`], not the proxy's parser.

use crate::app::{spawn_pair, TestApp};
use crate::cached_route::{header, TOKEN};
use crate::standin::{SeenRequest, StandIn};

/// A `traceparent` read by the W3C rules: `00-{32 hex}-{16 hex}-{2 hex}`,
/// lowercase, neither id all zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cTraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

impl W3cTraceParent {
    pub fn read(text: &str) -> Option<W3cTraceParent> {
        let fields: Vec<&str> = text.split('-').collect();
        let lower_hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let nonzero = |field: &str| field.bytes().any(|b| b != b'0');
        let [version, trace_id, parent_id, flags] = fields[..] else {
            return None;
        };
        let valid = version == "00"
            && lower_hex(trace_id, 32)
            && nonzero(trace_id)
            && lower_hex(parent_id, 16)
            && nonzero(parent_id)
            && lower_hex(flags, 2);
        valid.then(|| W3cTraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// A new, random, valid one.
    pub fn random(flags: &str) -> W3cTraceParent {
        W3cTraceParent {
            trace_id: format!("{:032x}", fastrand::u128(1..)),
            parent_id: format!("{:016x}", fastrand::u64(1..)),
            flags: flags.to_owned(),
        }
    }

    pub fn text(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// A conversation id no other request of this test used: a sure MISS.
pub fn fresh_id() -> String {
    format!("conv_tc_{:016x}", fastrand::u64(..))
}

/// `GET path` with the token and `headers` (each appended: a name may repeat).
pub async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.get(app.url(path)).bearer_auth(TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the proxy answers");
    assert!(response.status().is_success(), "{response:?}");
    response
}

/// The last API request the stand-in received.
pub async fn last_seen(standin: &StandIn) -> SeenRequest {
    let seen = standin.stats().await.requests;
    seen.last().expect("the stand-in saw a request").clone()
}

/// How many `name` headers a seen request carried.
pub fn count(seen: &SeenRequest, name: &str) -> usize {
    let named = |(candidate, _): &&(String, String)| candidate.eq_ignore_ascii_case(name);
    seen.headers.iter().filter(named).count()
}

/// A generated request id: a UUID's 32 lowercase hex digits.
pub fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn a_well_formed_request_id_is_kept_on_the_response_and_the_upstream_call() {
    let (standin, app) = spawn_pair(&[]).await;
    let longest = "r".repeat(128);
    for id in ["app-42", "A.b_c-d:e/f-0123456789", longest.as_str()] {
        let path = format!("/v1/conversations/{}", fresh_id());
        let response = get_with(&app, &path, &[("x-request-id", id)]).await;
        assert_eq!(header(&response, "x-cache"), "MISS");
        assert_eq!(header(&response, "x-request-id"), id);
        let seen = last_seen(&standin).await;
        assert_eq!(seen.request_id.as_deref(), Some(id));
        assert_eq!(count(&seen, "x-request-id"), 1);
    }
}

#[tokio::test]
async fn a_malformed_over_long_or_repeated_request_id_is_replaced() {
    let (standin, app) = spawn_pair(&[]).await;
    let over_long = "r".repeat(129);
    let cases: [&[(&str, &str)]; 5] = [
        &[("x-request-id", "has space")],
        &[("x-request-id", "semi;colon")],
        &[("x-request-id", &over_long)],
        &[("x-request-id", "one"), ("x-request-id", "two")],
        &[],
    ];
    for sent in cases {
        let path = format!("/v1/conversations/{}", fresh_id());
        let response = get_with(&app, &path, sent).await;
        let answered = header(&response, "x-request-id");
        assert!(is_generated(&answered), "{sent:?}: {answered}");
        let seen = last_seen(&standin).await;
        assert_eq!(
            seen.request_id.as_deref(),
            Some(answered.as_str()),
            "{sent:?}"
        );
        assert_eq!(count(&seen, "x-request-id"), 1, "{sent:?}");
    }
}

#[tokio::test]
async fn a_valid_traceparent_is_continued_with_a_span_of_the_proxys_own() {
    let (standin, app) = spawn_pair(&[]).await;
    for flags in ["01", "00", "ff"] {
        let client = W3cTraceParent::random(flags);
        let path = format!("/v1/conversations/{}", fresh_id());
        get_with(&app, &path, &[("traceparent", &client.text())]).await;
        let seen = last_seen(&standin).await;
        assert_eq!(count(&seen, "traceparent"), 1);
        let sent = seen.traceparent.as_deref().expect("a traceparent travels");
        let sent = W3cTraceParent::read(sent).expect("what travels is valid");
        assert_eq!(sent.trace_id, client.trace_id, "the same trace");
        assert_eq!(sent.flags, client.flags, "the same flags");
        assert_ne!(
            sent.parent_id, client.parent_id,
            "a span of the proxy's own"
        );
    }
}

#[tokio::test]
async fn an_invalid_traceparent_is_ignored_and_its_tracestate_stays_behind() {
    let (standin, app) = spawn_pair(&[]).await;
    let valid = W3cTraceParent::random("01");
    let (trace, parent) = (valid.trace_id.as_str(), valid.parent_id.as_str());
    let upper = trace
        .to_uppercase()
        .replace(|c: char| c.is_ascii_digit(), "A");
    let invalid = [
        format!("01-{trace}-{parent}-01"),
        format!("ff-{trace}-{parent}-01"),
        format!("00-{upper}-{parent}-01"),
        format!("00-{}-{parent}-01", "0".repeat(32)),
        format!("00-{trace}-{}-01", "0".repeat(16)),
        format!("00-{}-{parent}-01", &trace[1..]),
        format!("00-{trace}-{parent}0-01"),
        format!("00-{trace}-{parent}-1"),
        format!("00-{trace}-{parent}-01-extra"),
        "nonsense".to_owned(),
    ];
    for text in &invalid {
        assert_eq!(W3cTraceParent::read(text), None, "{text} is invalid");
        let path = format!("/v1/conversations/{}", fresh_id());
        let sent = [
            ("traceparent", text.as_str()),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let response = get_with(&app, &path, &sent).await;
        assert_eq!(response.status(), 200, "{text}");
        let seen = last_seen(&standin).await;
        assert_eq!(seen.traceparent, None, "{text}");
        assert_eq!(count(&seen, "tracestate"), 0, "{text}");
    }
}

#[tokio::test]
async fn tracestate_travels_unchanged_up_to_512_bytes_and_only_with_a_trace() {
    let (standin, app) = spawn_pair(&[]).await;
    let at_limit = format!("vendor={}", "v".repeat(512 - "vendor=".len()));
    let over = format!("{at_limit}v");
    let cases = [
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", true, true),
        (at_limit.as_str(), true, true),
        (over.as_str(), true, false),
        ("rojo=00f067aa0ba902b7", false, false),
    ];
    for (state, with_trace, travels) in cases {
        let client = W3cTraceParent::random("01").text();
        let mut sent = vec![("tracestate", state)];
        if with_trace {
            sent.push(("traceparent", client.as_str()));
        }
        let path = format!("/v1/conversations/{}", fresh_id());
        get_with(&app, &path, &sent).await;
        let seen = last_seen(&standin).await;
        let label = format!("{} bytes, trace {with_trace}", state.len());
        assert_eq!(seen.traceparent.is_some(), with_trace, "{label}");
        let expected = travels.then_some(state);
        assert_eq!(seen.header("tracestate"), expected, "{label}");
        assert_eq!(count(&seen, "tracestate"), usize::from(travels), "{label}");
    }
}
#[tokio::test]
async fn pass_through_replaces_the_clients_own_ids() {
    let (standin, app) = spawn_pair(&[]).await;
    let client = W3cTraceParent::random("01");
    let bad_trace = format!("00-{}-{}-01", "A".repeat(32), client.parent_id);
    let cases = [
        ("bad id", client.text(), true),
        ("app-7", client.text(), true),
        ("app-8", bad_trace, false),
    ];
    for (request_id, traceparent, continued) in cases {
        for (method, path) in [
            (reqwest::Method::POST, "/v1/agents/agent_pt/notes"),
            (reqwest::Method::GET, "/v1/conversations/conv_pt?unknown=1"),
        ] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(TOKEN)
                .header("x-request-id", request_id)
                .header("traceparent", &traceparent)
                .header("tracestate", "congo=t61rcWkgMzE")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(header(&response, "x-cache"), "BYPASS", "{path}");
            let answered = header(&response, "x-request-id");
            let seen = last_seen(&standin).await;
            let label = format!("{method} {path} {request_id} {traceparent}");
            assert_eq!(
                seen.request_id.as_deref(),
                Some(answered.as_str()),
                "{label}"
            );
            for name in ["x-request-id", "traceparent", "tracestate"] {
                let expected = usize::from(name == "x-request-id" || continued);
                assert_eq!(count(&seen, name), expected, "{name}: {label}");
            }
            if continued {
                let sent = W3cTraceParent::read(seen.traceparent.as_deref().unwrap()).unwrap();
                assert_eq!(sent.trace_id, client.trace_id, "{label}");
                assert_ne!(sent.parent_id, client.parent_id, "{label}");
                assert_eq!(seen.header("tracestate"), Some("congo=t61rcWkgMzE"));
            }
        }
    }
}
