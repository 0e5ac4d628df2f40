//! Writing a [`Response`] onto the connection: well-formed, or with its fault.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::response::{Body, Delivery, Response};
use crate::state::InFlight;

/// Bodies up to this size are written with the head in one syscall.
const COALESCE_LIMIT: usize = 64 * 1024;
/// How many chunks `chunked_never_ends` sends before falling silent.
const CHUNKS_BEFORE_SILENCE: usize = 2;

/// What the connection does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Close it.
    Close,
    /// Keep it for the next request.
    KeepAlive,
    /// Keep it, and say so with `connection: keep-alive` (HTTP/1.0 clients).
    KeepAliveAnnounced,
}

/// Writes `response`; `persistence` is what the request asked for. Returns
/// whether the connection can carry another request. An API request stops
/// counting as in flight (`in_flight`) as its whole answer goes out: the
/// client may read all of it, and send its next request, before this task
/// runs again after the write.
pub async fn write_response(
    stream: &mut TcpStream,
    mut response: Response,
    persistence: Persistence,
    in_flight: Option<InFlight>,
) -> io::Result<Persistence> {
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    let persistence = if asks_to_close(&response) {
        Persistence::Close
    } else {
        persistence
    };
    let full_len = response.body.len();
    let body = if response.head_only {
        Body::default()
    } else {
        std::mem::take(&mut response.body)
    };
    match response.delivery {
        Delivery::Complete => {
            drop(in_flight);
            write_complete(stream, &response, full_len, &body, persistence).await?;
            Ok(persistence)
        }
        Delivery::Trickle(interval) => {
            let head = head(&response, Framing::Length(full_len), persistence);
            stream.write_all(&head).await?;
            trickle(stream, &body.to_vec(), interval).await?;
            Ok(persistence)
        }
        _ => {
            write_fault_then_close(stream, &response, full_len, &body).await?;
            Ok(Persistence::Close)
        }
    }
}

/// The faults that end the connection: writes the broken response, then closes.
async fn write_fault_then_close(
    stream: &mut TcpStream,
    response: &Response,
    full_len: usize,
    body: &Body,
) -> io::Result<()> {
    match response.delivery {
        // Not a byte: the peer sees its request go unanswered.
        Delivery::CloseWithoutResponse => {}
        // Not faults that close: `write_response` delivers them itself.
        Delivery::Complete | Delivery::Trickle(_) => {}
        Delivery::MalformedHead => {
            stream
                .write_all(b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n")
                .await?;
        }
        Delivery::BadHeader => {
            let head = format!(
                "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nthis header line has no colon\r\n\r\n",
                response.status,
                reason_phrase(response.status)
            );
            stream.write_all(head.as_bytes()).await?;
        }
        Delivery::DropMidBody => {
            stream
                .write_all(&head(
                    response,
                    Framing::Length(full_len),
                    Persistence::Close,
                ))
                .await?;
            let bytes = body.to_vec();
            stream.write_all(&bytes[..bytes.len() / 2]).await?;
        }
        Delivery::ShortBody => {
            let claimed = Framing::Length(full_len + 100);
            stream
                .write_all(&head(response, claimed, Persistence::Close))
                .await?;
            write_body(stream, body).await?;
        }
        Delivery::ChunkedNeverEnds => {
            stream
                .write_all(&head(response, Framing::Chunked, Persistence::Close))
                .await?;
            write_some_chunks(stream, &body.to_vec()).await?;
            wait_for_peer_to_leave(stream).await;
        }
    }
    stream.shutdown().await
}

/// A response whose own `connection` header says `close` closes the connection.
fn asks_to_close(response: &Response) -> bool {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

async fn write_complete(
    stream: &mut TcpStream,
    response: &Response,
    full_len: usize,
    body: &Body,
    persistence: Persistence,
) -> io::Result<()> {
    let framing = if status_has_body(response.status) {
        Framing::Length(full_len)
    } else {
        Framing::None
    };
    let mut head = head(response, framing, persistence);
    if body.len() <= COALESCE_LIMIT {
        for segment in body.segments() {
            head.extend_from_slice(segment);
        }
        return stream.write_all(&head).await;
    }
    stream.write_all(&head).await?;
    write_body(stream, body).await
}

async fn write_body(stream: &mut TcpStream, body: &Body) -> io::Result<()> {
    for segment in body.segments() {
        stream.write_all(segment).await?;
    }
    Ok(())
}

async fn trickle(stream: &mut TcpStream, bytes: &[u8], interval: Duration) -> io::Result<()> {
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(interval).await;
        }
        stream.write_all(std::slice::from_ref(byte)).await?;
    }
    Ok(())
}

/// Sends the first few chunks of `bytes` (never the terminating chunk).
async fn write_some_chunks(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let chunk_len = (bytes.len() / (CHUNKS_BEFORE_SILENCE + 1)).max(1);
    for chunk in bytes.chunks(chunk_len).take(CHUNKS_BEFORE_SILENCE) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        stream.write_all(&framed).await?;
    }
    stream.flush().await
}

/// Holds the connection open, discarding input, until the peer closes it.
async fn wait_for_peer_to_leave(stream: &mut TcpStream) {
    let mut discard = [0_u8; 4096];
    while let Ok(read) = stream.read(&mut discard).await {
        if read == 0 {
            break;
        }
    }
}

/// How the head delimits the body.
enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// Serialises the status line and headers, adding the framing header and
/// `connection` as needed.
fn head(response: &Response, framing: Framing, persistence: Persistence) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = response.status;
    head.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for (name, value) in &response.headers {
        push_header(&mut head, name, value);
    }
    match framing {
        Framing::None => {}
        Framing::Length(len) => push_header(&mut head, "content-length", &len.to_string()),
        Framing::Chunked => push_header(&mut head, "transfer-encoding", "chunked"),
    }
    let has_connection = response
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"));
    match persistence {
        _ if has_connection => {}
        Persistence::Close => push_header(&mut head, "connection", "close"),
        Persistence::KeepAliveAnnounced => push_header(&mut head, "connection", "keep-alive"),
        Persistence::KeepAlive => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &str) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// 1xx, 204 and 304 responses carry no body and no `content-length`.
fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown")
}
