//! HTTP/2 on the public port: prior knowledge, the stream limit, and a rapid-reset flood.

use std::time::{Duration, Instant};

use http::{Request, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::{spawn_pair, TestApp};
use crate::cached_route::{header, TOKEN};

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

async fn h2_get(client: &reqwest::Client, app: &TestApp, path: &str) -> reqwest::Response {
    client
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn prior_knowledge_h2_is_served_and_cached_on_the_same_port() {
    let (standin, app) = spawn_pair(&[]).await;
    let client = h2_client();
    let miss = h2_get(&client, &app, "/v1/conversations/conv_h2").await;
    assert_eq!(miss.version(), Version::HTTP_2);
    assert_eq!(header(&miss, "x-cache"), "MISS");
    let upstream_body = miss.bytes().await.unwrap();
    // Long enough to be stored in two parts: a HIT sends both, in order.
    assert!(upstream_body.len() > 4096, "{}", upstream_body.len());
    let hits = (0..20).map(|_| h2_get(&client, &app, "/v1/conversations/conv_h2"));
    for hit in futures::future::join_all(hits).await {
        assert_eq!(hit.version(), Version::HTTP_2);
        assert_eq!(header(&hit, "x-cache"), "HIT");
        assert_eq!(hit.bytes().await.unwrap(), upstream_body);
    }
    assert_eq!(standin.requests_for("conv_h2").await, 1);
    // HTTP/1.1 still works on the same port.
    let h1 = app.get("/v1/conversations/conv_h2", Some(TOKEN)).await;
    assert_eq!(h1.version(), Version::HTTP_11);
    assert_eq!(header(&h1, "x-cache"), "HIT");
    assert_eq!(h1.bytes().await.unwrap(), upstream_body);
}

#[tokio::test]
async fn the_stream_limit_is_announced() {
    let (_standin, app) = spawn_pair(&[("server.h2_max_concurrent_streams", "7")]).await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // SETTINGS arrive with the first exchange.
    let request = Request::get("/healthz").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(send.current_max_send_streams(), 7);
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// The attack of 2023: `n` streams each opened and cancelled in the same
/// packet, written as raw frames so nothing paces them. Returns what the
/// server sent back until it closed the connection (or 3 s passed).
async fn rapid_reset(app: &TestApp, n: u32) -> Vec<u8> {
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const END_STREAM_AND_HEADERS: u8 = 0x5;
    const CANCEL: u32 = 0x8;
    // HPACK: :method GET, :scheme http, :path /, :authority "x".
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..n {
        let stream = 2 * i + 1;
        bytes.extend(frame(HEADERS, END_STREAM_AND_HEADERS, stream, &block));
        bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let _ = tcp.write_all(&bytes).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut received)).await;
    received
}

/// Whether `bytes` (frames from the server) hold a GOAWAY with ENHANCE_YOUR_CALM.
fn calmed(bytes: &[u8]) -> bool {
    const GOAWAY: u8 = 0x7;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        if rest[3] == GOAWAY && payload.len() >= 8 {
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return code == ENHANCE_YOUR_CALM;
        }
        rest = &rest[9 + len..];
    }
    false
}

#[tokio::test]
async fn a_rapid_reset_flood_is_cut_off_without_hurting_other_clients() {
    let (_standin, app) = spawn_pair(&[]).await;
    let started = Instant::now();
    let flood = rapid_reset(&app, 5000);
    let others = async {
        let client = h2_client();
        let mut served = 0;
        for _ in 0..50 {
            let response = h2_get(&client, &app, "/v1/conversations/conv_calm").await;
            assert_eq!(response.status(), 200);
            served += 1;
        }
        served
    };
    let (answer, served) = tokio::join!(flood, others);
    assert!(calmed(&answer), "the flood got no GOAWAY ENHANCE_YOUR_CALM");
    assert_eq!(served, 50);
    assert!(started.elapsed() < Duration::from_secs(10));
    // And the proxy still answers new connections.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}
