//! Raw-socket requests: bytes a well-behaved client library would never send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `GET target` that closes the connection after the answer.
pub fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Sends `request` as is and reads until the proxy closes (or 3 s pass).
pub async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_until_closed(&mut stream, Duration::from_secs(3)).await
}

/// Everything the peer sends until it closes, or until `limit` passes.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    read_to_close(stream, limit).await.text
}

/// What a peer sent, and whether it closed the connection (an end of
/// stream or a reset) before the limit passed.
pub struct Received {
    pub text: String,
    pub closed: bool,
}

/// Reads until the peer closes or `limit` passes, and says which came first.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Received {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .is_ok();
    Received {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
    }
}
