//! SPEC section 13 in the logs: one trace id through the app's request, the real binary's access event and the stand-in's log line.

use serde_json::{json, Value};

use crate::app::ConfigFile;
use crate::binary::{json_events, launch, Running};
use crate::cached_route::{header, TOKEN};
use crate::standin::StandIn;
use crate::trace_context::{fresh_id, last_seen, W3cTraceParent};
use crate::trace_sharing::wait_for_calls;

/// The real binary in front of `standin`, logging JSON at `info`.
async fn logging_proxy(standin: &StandIn) -> Running {
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("log.level", "\"info\"")
        .set("log.format", "\"json\"");
    launch(config, &[]).await
}

/// `GET path` on the binary with the token and `headers`.
async fn get(running: &Running, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("http://{}{path}", running.addr))
        .bearer_auth(TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the proxy answers")
}

/// The access event of the request whose id is `request_id`.
fn access_event<'a>(events: &'a [Value], request_id: &str) -> &'a Value {
    let found = events
        .iter()
        .find(|event| event["target"] == "ayra_cache::access" && event["request_id"] == request_id);
    found.unwrap_or_else(|| panic!("no access event for {request_id}"))
}

/// The stand-in's last record and its log line carry `trace` (with a span
/// of the proxy's own) and `request_id`.
async fn assert_api_saw(standin: &StandIn, trace: &W3cTraceParent, request_id: &str) {
    let seen = last_seen(standin).await;
    let api = W3cTraceParent::read(seen.traceparent.as_deref().unwrap()).unwrap();
    assert_eq!(api.trace_id, trace.trace_id);
    assert_eq!(seen.request_id.as_deref(), Some(request_id));
    let lines = standin.log_lines();
    let line = lines
        .iter()
        .find(|line| line.contains("ayra_standin::api") && line.contains(&api.trace_id))
        .unwrap_or_else(|| panic!("no stand-in line with the trace: {lines:?}"));
    assert!(
        line.contains(&format!("request_id=\"{request_id}\"")),
        "{line}"
    );
    assert!(line.contains(&api.parent_id), "{line}");
}

#[tokio::test]
async fn one_trace_id_through_the_app_the_proxy_and_the_api() {
    let standin = StandIn::spawn_logging().await;
    let mut running = logging_proxy(&standin).await;
    // The app's request: its own request id and trace context.
    let app = W3cTraceParent::random("01");
    let path = format!("/v1/conversations/{}", fresh_id());
    let traceparent = app.text();
    let sent = [
        ("x-request-id", "dashboard-7f3a"),
        ("traceparent", traceparent.as_str()),
    ];
    let miss = get(&running, &path, &sent).await;
    assert_eq!(header(&miss, "x-cache"), "MISS");
    assert_eq!(header(&miss, "x-request-id"), "dashboard-7f3a");
    // A HIT with ids of its own, and one whose trace context is invalid.
    let other = W3cTraceParent::random("00");
    let hit = get(
        &running,
        &path,
        &[("x-request-id", "hit-1"), ("traceparent", &other.text())],
    )
    .await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let upper = format!("00-{}-{}-01", "A".repeat(32), other.parent_id);
    get(
        &running,
        &path,
        &[("x-request-id", "hit-2"), ("traceparent", &upper)],
    )
    .await;

    assert_api_saw(&standin, &app, "dashboard-7f3a").await;

    // The proxy's access events.
    let events = json_events(&running.stop());
    let event = access_event(&events, "dashboard-7f3a");
    assert_eq!(event["cache"], "miss");
    assert_eq!(event["trace_id"], app.trace_id.as_str());
    assert_eq!(event["parent_id"], app.parent_id.as_str());
    let hit = access_event(&events, "hit-1");
    assert_eq!(hit["cache"], "hit");
    assert_eq!(
        hit["trace_id"],
        other.trace_id.as_str(),
        "its own, not the MISS's"
    );
    assert_eq!(hit["parent_id"], other.parent_id.as_str());
    let ignored = access_event(&events, "hit-2");
    for field in ["trace_id", "parent_id", "leader_trace_id"] {
        assert!(ignored.get(field).is_none(), "{field} in {ignored}");
    }
}

#[tokio::test]
async fn joiners_log_their_own_ids_and_the_leaders_trace() {
    let standin = StandIn::spawn().await;
    let id = fresh_id();
    standin.set(&id, json!({"delay_ms": 400})).await;
    let mut running = logging_proxy(&standin).await;
    let path = format!("/v1/conversations/{id}");
    let leader = W3cTraceParent::random("01");
    let leader_trace = leader.text();
    let joiner = W3cTraceParent::random("01");
    let leader_headers = [
        ("x-request-id", "leader"),
        ("traceparent", leader_trace.as_str()),
    ];
    let leading = get(&running, &path, &leader_headers);
    let joining = async {
        wait_for_calls(&standin, &id, 1).await;
        let traceparent = joiner.text();
        let traced = [
            ("x-request-id", "joiner-traced"),
            ("traceparent", traceparent.as_str()),
        ];
        tokio::join!(
            get(&running, &path, &traced),
            get(&running, &path, &[("x-request-id", "joiner-plain")])
        )
    };
    let (_, (traced, plain)) = tokio::join!(leading, joining);
    for response in [&traced, &plain] {
        assert!(header(response, "cache-status").contains("collapsed"));
    }
    assert_eq!(standin.requests_for(&id).await, 1);

    let events = json_events(&running.stop());
    let led = access_event(&events, "leader");
    assert_eq!(led["collapsed"], false);
    assert!(led.get("leader_trace_id").is_none(), "{led}");
    let traced = access_event(&events, "joiner-traced");
    assert_eq!(traced["collapsed"], true);
    assert_eq!(
        traced["trace_id"],
        joiner.trace_id.as_str(),
        "its own trace"
    );
    assert_eq!(traced["leader_trace_id"], leader.trace_id.as_str());
    let plain = access_event(&events, "joiner-plain");
    assert_eq!(plain["collapsed"], true);
    for field in ["trace_id", "leader_trace_id"] {
        assert!(plain.get(field).is_none(), "{field} in {plain}");
    }
}
