//! The W3C Trace Context rules (the inputs of the W3C test suite's traceparent
//! and tracestate cases) and SPEC section 13's request id rule.

use super::*;

const VALID: &str = "00-12345678901234567890123456789012-1234567890123456-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn a_valid_traceparent_is_read_field_by_field() {
    let parsed = TraceParent::parse(VALID.as_bytes()).unwrap();
    assert_eq!(
        parsed.trace_id_hex().as_str(),
        "12345678901234567890123456789012"
    );
    assert_eq!(parsed.parent_id_hex().as_str(), "1234567890123456");
    assert_eq!(parsed.flags, 0x01);
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(TraceParent::parse(unsampled.as_bytes()).unwrap().flags, 0);
    // Flags other than `sampled` travel as they came.
    let other = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
    assert_eq!(TraceParent::parse(other.as_bytes()).unwrap().flags, 0xff);
}

#[test]
fn optional_whitespace_around_the_value_is_allowed() {
    for text in [
        format!(" {VALID}"),
        format!("\t{VALID}"),
        format!("{VALID} "),
        format!("{VALID}\t"),
        format!("\t {VALID} \t"),
    ] {
        assert!(TraceParent::parse(text.as_bytes()).is_some(), "{text:?}");
    }
}

#[test]
fn every_invalid_form_of_the_w3c_suite_is_ignored() {
    let invalid = [
        // Extra trailing characters or fields on version 00.
        "00-12345678901234567890123456789012-1234567890123456-01.",
        "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        // Version ff is forbidden; future versions are not taken (SPEC: 00 only).
        "ff-12345678901234567890123456789012-1234567890123456-01",
        "cc-12345678901234567890123456789012-1234567890123456-01",
        "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        // Illegal characters, too long, too short: version.
        ".0-12345678901234567890123456789012-1234567890123456-01",
        "0.-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0000-12345678901234567890123456789012-1234567890123456-01",
        "0-12345678901234567890123456789012-1234567890123456-01",
        // Trace id.
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-.2345678901234567890123456789012-1234567890123456-01",
        "00-1234567890123456789012345678901.-1234567890123456-01",
        "00-123456789012345678901234567890123-1234567890123456-01",
        "00-1234567890123456789012345678901-1234567890123456-01",
        // Parent id.
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-12345678901234567890123456789012-.234567890123456-01",
        "00-12345678901234567890123456789012-123456789012345.-01",
        "00-12345678901234567890123456789012-12345678901234567-01",
        "00-12345678901234567890123456789012-123456789012345-01",
        // Flags.
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-0.",
        "00-12345678901234567890123456789012-1234567890123456-001",
        "00-12345678901234567890123456789012-1234567890123456-1",
        // Uppercase hex (the spec's HEXDIGLC), anywhere.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        // Wrong separators, and nothing at all.
        "00_12345678901234567890123456789012-1234567890123456-01",
        "00-12345678901234567890123456789012_1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456_01",
        "",
    ];
    for text in invalid {
        assert_eq!(TraceParent::parse(text.as_bytes()), None, "{text:?}");
    }
}

#[test]
fn a_repeated_traceparent_is_ignored_and_the_name_is_case_blind() {
    let two = headers(&[
        (
            "traceparent",
            "00-12345678901234567890123456789011-1234567890123456-01",
        ),
        ("traceparent", VALID),
    ]);
    assert_eq!(TraceParent::from_headers(&two), None);
    // HTTP names are case-insensitive: `TrAcEpArEnT` is the same header.
    let cased = headers(&[("TrAcEpArEnT", VALID)]);
    assert!(TraceParent::from_headers(&cased).is_some());
    assert_eq!(
        TraceParent::from_headers(&headers(&[("trace-parent", VALID)])),
        None
    );
}

#[test]
fn the_upstream_call_continues_the_trace_with_a_span_of_its_own() {
    let incoming = TraceParent::parse(VALID.as_bytes()).unwrap();
    let span = [0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89];
    let outgoing = incoming.child(span).to_header_value();
    assert_eq!(
        outgoing,
        "00-12345678901234567890123456789012-abcdef0123456789-01"
    );
    // What we send is itself valid by the same rules.
    let reread = TraceParent::parse(outgoing.as_bytes()).unwrap();
    assert_eq!(reread.trace_id, incoming.trace_id);
    assert_eq!(reread.flags, incoming.flags);
    assert_eq!(reread.parent_id, span);
}

#[test]
fn new_span_ids_are_never_all_zeros_and_differ() {
    let ids: std::collections::HashSet<[u8; 8]> = (0..1000).map(|_| new_span_id()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(!ids.contains(&[0; 8]));
}

#[test]
fn tracestate_travels_unchanged_and_combined_up_to_512_bytes() {
    let one = headers(&[("tracestate", "foo=1,bar=2")]);
    assert_eq!(tracestate(&one).unwrap(), "foo=1,bar=2");
    let ows = headers(&[("tracestate", "foo=1 \t , \t bar=2")]);
    assert_eq!(tracestate(&ows).unwrap(), "foo=1 \t , \t bar=2");
    let several = headers(&[
        ("tracestate", "foo=1,bar=2"),
        ("TraceState", "rojo=1,congo=2"),
        ("tracestate", "baz=3"),
    ]);
    assert_eq!(
        tracestate(&several).unwrap(),
        "foo=1,bar=2,rojo=1,congo=2,baz=3"
    );
    let with_empty = headers(&[("tracestate", ""), ("tracestate", "foo=1")]);
    assert_eq!(tracestate(&with_empty).unwrap(), "foo=1");
    assert_eq!(tracestate(&headers(&[("tracestate", "")])), None);
    assert_eq!(tracestate(&headers(&[])), None);

    let at_limit = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE - 2);
    assert!(tracestate(&headers(&[("tracestate", &at_limit)])).is_some());
    let over = at_limit.clone() + "v";
    assert_eq!(tracestate(&headers(&[("tracestate", &over)])), None);
    let split = [
        ("tracestate", &at_limit[..300]),
        ("tracestate", &at_limit[300..]),
    ];
    // Joined, they gain a comma: 513 bytes, dropped.
    assert_eq!(tracestate(&headers(&split)), None);
}

#[test]
fn a_request_id_is_kept_only_when_well_formed_and_single() {
    let kept = [
        "a",
        "req-123_abc.def:ghi/jkl",
        "0af7651916cd43dd8448eb211c80319c",
        &"x".repeat(128),
    ];
    for id in kept {
        let map = headers(&[("x-request-id", id)]);
        assert_eq!(client_request_id(&map).unwrap(), id);
    }
    let too_long = "x".repeat(129);
    let replaced = [
        "",
        "has space",
        "semi;colon",
        "quote\"",
        "ümlaut",
        &too_long,
    ];
    for id in replaced {
        let mut map = HeaderMap::new();
        map.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(id.as_bytes()).unwrap(),
        );
        assert_eq!(client_request_id(&map), None, "{id:?}");
    }
    let repeated = headers(&[("x-request-id", "one"), ("x-request-id", "two")]);
    assert_eq!(client_request_id(&repeated), None);
    assert_eq!(client_request_id(&headers(&[])), None);
}

#[test]
fn a_request_keeps_its_own_id_or_gets_a_generated_one() {
    let kept = RequestIds::of(&headers(&[("x-request-id", "app-42")]));
    assert_eq!(kept.request_id, "app-42");
    assert_eq!(kept.trace, None);
    for sent in [
        headers(&[("x-request-id", "has space")]),
        headers(&[("x-request-id", "one"), ("x-request-id", "two")]),
        headers(&[]),
    ] {
        let generated = RequestIds::of(&sent).request_id;
        let text = generated.to_str().unwrap();
        assert_eq!(text.len(), 32, "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
    }
    let traced = RequestIds::of(&headers(&[("traceparent", VALID)]));
    assert_eq!(traced.trace, TraceParent::parse(VALID.as_bytes()));
}

/// Generated ids are version-4 UUIDs (32 hex digits, the version and
/// variant digits set) and never repeat.
#[test]
fn generated_request_ids_are_random_uuids_that_do_not_repeat() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        let id = generated_request_id();
        let text = id.to_str().unwrap();
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        assert!(text.len() == 32 && text.bytes().all(lower_hex), "{text}");
        assert_eq!(&text[12..13], "4", "version digit of {text}");
        assert!("89ab".contains(&text[16..17]), "variant digit of {text}");
        assert!(seen.insert(text.to_owned()), "{text} generated twice");
    }
}

/// The headers an upstream call gets, written over `client`'s own.
fn written(client: &[(&str, &str)]) -> HeaderMap {
    let client = headers(client);
    let mut outgoing = client.clone();
    RequestIds::of(&client)
        .upstream(&client)
        .write(&mut outgoing);
    outgoing
}

#[test]
fn the_upstream_call_carries_the_ids_in_place_of_the_clients_own() {
    let outgoing = written(&[
        ("x-request-id", "app-42"),
        ("traceparent", VALID),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    assert_eq!(outgoing.get_all(&X_REQUEST_ID).iter().count(), 1);
    assert_eq!(outgoing[&X_REQUEST_ID], "app-42");
    assert_eq!(outgoing.get_all(&TRACEPARENT).iter().count(), 1);
    let sent = TraceParent::from_headers(&outgoing).unwrap();
    let received = TraceParent::parse(VALID.as_bytes()).unwrap();
    assert_eq!(sent.trace_id, received.trace_id);
    assert_eq!(sent.flags, received.flags);
    assert_ne!(sent.parent_id, received.parent_id, "a span of our own");
    assert_eq!(outgoing[&TRACESTATE], "congo=t61rcWkgMzE");
}

#[test]
fn without_a_valid_trace_nothing_of_the_clients_trace_travels() {
    let uppercase = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    for traceparent in [None, Some("00-invalid"), Some(uppercase)] {
        let mut client = vec![("x-request-id", "bad id"), ("tracestate", "congo=1")];
        client.extend(traceparent.map(|value| ("traceparent", value)));
        let outgoing = written(&client);
        assert!(!outgoing.contains_key(&TRACEPARENT), "{traceparent:?}");
        assert!(!outgoing.contains_key(&TRACESTATE), "{traceparent:?}");
        assert_ne!(outgoing[&X_REQUEST_ID], "bad id");
    }
    let over = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE - 1);
    let outgoing = written(&[("traceparent", VALID), ("tracestate", &over)]);
    assert!(outgoing.contains_key(&TRACEPARENT));
    assert!(!outgoing.contains_key(&TRACESTATE), "over 512 bytes");
}

#[test]
fn each_upstream_call_is_a_span_of_its_own() {
    let client = headers(&[("traceparent", VALID)]);
    let carried = RequestIds::of(&client).upstream(&client);
    let span = |_| {
        let mut outgoing = HeaderMap::new();
        carried.write(&mut outgoing);
        TraceParent::from_headers(&outgoing).unwrap().parent_id
    };
    let spans: std::collections::HashSet<[u8; 8]> = (0..100).map(span).collect();
    assert_eq!(spans.len(), 100);
}

#[test]
fn the_pass_over_the_names_reads_what_the_lookups_read() {
    let cases = [
        headers(&[]),
        headers(&[("accept", "*/*"), ("x-request-id", "app-1"), ("host", "h")]),
        headers(&[("X-Request-Id", "app-1"), ("TraceParent", VALID)]),
        headers(&[("x-request-id", "a"), ("host", "h"), ("x-request-id", "b")]),
        headers(&[("traceparent", VALID), ("traceparent", VALID)]),
        headers(&[("x-request-id", "bad id"), ("traceparent", "00-bad")]),
        headers(&[("x-request-ids", "app-1"), ("traceparents", VALID)]),
    ];
    for map in &cases {
        let ids = RequestIds::of(map);
        match client_request_id(map) {
            Some(id) => assert_eq!(&ids.request_id, id, "{map:?}"),
            None => assert_eq!(ids.request_id.len(), 32, "generated: {map:?}"),
        }
        assert_eq!(ids.trace, TraceParent::from_headers(map), "{map:?}");
    }
}
