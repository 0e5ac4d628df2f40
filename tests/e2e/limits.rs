//! Connection limits: header read timeout, idle timeout, max connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::spawn_pair;
use crate::raw;

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_read_timeout() {
    let (_standin, app) = spawn_pair(&[
        ("server.header_read_timeout", "\"600ms\""),
        ("server.idle_timeout", "\"10s\""),
    ])
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => panic!("the proxy answered a head it never received whole"),
            Err(_) => {}
        }
    }
    assert!(cut, "the slow client was never cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(550),
        "cut too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "cut too late: {elapsed:?}"
    );
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_idle_timeout_not_header_read_timeout() {
    let (_standin, app) = spawn_pair(&[
        ("server.header_read_timeout", "\"300ms\""),
        ("server.idle_timeout", "\"1500ms\""),
    ])
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    // Past the header timeout, the idle connection still serves.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    // Then, left idle, it is closed after about idle_timeout.
    let idle_since_second = Instant::now();
    let rest = raw::read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty());
    let idle = idle_since_second.elapsed();
    assert!(idle >= Duration::from_millis(1400), "closed after {idle:?}");
    assert!(idle < Duration::from_millis(3000), "closed after {idle:?}");
    assert!(idle_since.elapsed() > Duration::from_millis(2000));
}

#[tokio::test]
async fn connections_past_max_connections_wait_for_a_slot() {
    let (_standin, app) = spawn_pair(&[("server.max_connections", "2")]).await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let second = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = app.addr;
    let waiting = tokio::spawn(async move { raw::exchange(addr, &raw::get("/healthz")).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served at once"
    );
    drop(first);
    let response = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(second);
}

#[tokio::test]
async fn upstream_requests_in_flight_never_exceed_max_concurrency() {
    let (standin, app) = spawn_pair(&[("upstream.max_concurrency", "2")]).await;
    let ids: Vec<String> = (0..8).map(|i| format!("conv_cc{i}")).collect();
    // Each call takes long enough that all eight requests are at the proxy
    // before the first two calls end, even on a loaded machine: the proxy
    // must then hold six back.
    for id in &ids {
        standin.set(id, serde_json::json!({"delay_ms": 400})).await;
    }
    let requests = ids.iter().map(|id| {
        let path = format!("/v1/conversations/{id}");
        let app = &app;
        async move { app.get(&path, Some("sk_test")).await.status() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = standin.stats().await;
    assert_eq!(stats.requests_total, 8);
    assert_eq!(stats.max_in_flight, 2);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_idle_and_header_timeouts() {
    let (standin, app) = spawn_pair(&[
        ("server.idle_timeout", "\"500ms\""),
        ("server.header_read_timeout", "\"500ms\""),
        ("upstream.max_body", "\"64MiB\""),
    ])
    .await;
    standin
        .set("conv_big", serde_json::json!({"body_bytes": 12_000_000}))
        .await;
    // A small receive buffer of a fixed size: the kernel cannot take the
    // whole body for the client (loopback buffers may grow past 12 MB).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let request =
        "GET /v1/conversations/conv_big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    // Once the answer has begun (the upstream's 12 MB fetched and on its
    // way, which takes a while on a loaded machine), never read for a
    // while: the proxy's writes stall.
    tokio::time::timeout(Duration::from_secs(20), stream.readable())
        .await
        .expect("the answer began")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => received += n,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the stalled connection was never closed");
    assert!(
        received < 12_000_000,
        "the whole body was delivered: {received}"
    );
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}
