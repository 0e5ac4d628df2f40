//! One client connection: requests in, responses out, kept alive until either side closes.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::request_reader::{ReadError, Request, RequestReader};
use crate::response_writer::{write_response, Persistence};
use crate::router;
use crate::state::State;

/// Serves requests on `stream` until the client or a response closes it.
pub async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut reader = RequestReader::default();
    loop {
        let request = match reader.next_request(&mut stream).await {
            Ok(request) => request,
            Err(ReadError::Gone) => return,
            Err(ReadError::Rejected(response)) => {
                tracing::debug!(status = response.status, "request rejected");
                // The connection is closed just after; a failed write changes nothing.
                let _ = write_response(&mut stream, response, Persistence::Close, None).await;
                return;
            }
        };
        let persistence = requested_persistence(&request);
        let in_flight = request
            .path
            .starts_with("/v1/")
            .then(|| state.enter_api_request());
        let response = router::respond(&state, &request);
        tracing::debug!(
            method = %request.method,
            path = %request.path,
            status = response.status,
            "answering"
        );
        match write_response(&mut stream, response, persistence, in_flight).await {
            Ok(Persistence::KeepAlive | Persistence::KeepAliveAnnounced) => {}
            Ok(Persistence::Close) => {
                // The peer may be gone already; there is nothing left to tell it.
                let _ = stream.shutdown().await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// HTTP/1.1 stays open unless `connection: close`; HTTP/1.0 closes unless
/// `connection: keep-alive`.
fn requested_persistence(request: &Request) -> Persistence {
    if request.header_has_token("connection", "close") {
        Persistence::Close
    } else if request.minor_version >= 1 {
        Persistence::KeepAlive
    } else if request.header_has_token("connection", "keep-alive") {
        Persistence::KeepAliveAnnounced
    } else {
        Persistence::Close
    }
}
