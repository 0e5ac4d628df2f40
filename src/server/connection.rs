//! One client connection: HTTP/1.1 or HTTP/2 (plain or TLS), with head limits, cut when
//! [`Activity`] says it is due, its heads checked by the [`HeadGate`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, BusyGuard, OnExpiry, Tracked};
use super::check_timer::CheckTimer;
use super::head_gate::{Handoff, HeadGate};
use super::limits::ConnectionLimits;
use super::stop_signal::StopSignal;
use super::{HeadRefusal, Respond};
use crate::body::ResponseBody;

/// Largest request head accepted; past it hyper answers 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// HTTP/2 streams a client may reset before they are even answered, before
/// the connection is cut (the 2023 rapid-reset class of attacks).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams the server may reset for protocol errors before cutting the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// HTTP/1.1 and HTTP/2 (by prior knowledge, or ALPN under TLS) on one port.
fn protocols(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // A client may shut its write side once its request is sent.
        .half_close(true)
        // At most 100 header fields, past it 431: hyper's default. Setting it
        // explicitly would make hyper fill two 100-slot arrays per request
        // (about 5% of a HIT's instructions, measured); the limit is tested.
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    builder
}

/// Serves one connection until the client leaves, a limit cuts it, or shutdown drains it.
pub(super) async fn serve<R: Respond>(
    stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<R>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) {
    // An answer's last segment goes out at once, not held for an ACK (Nagle);
    // nginx's `tcp_nodelay on`. HTTP/2 writes frames as they are ready.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "TCP_NODELAY not set");
    }
    let activity = Arc::new(Activity::new());
    let tracked = Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    };
    let connection = Served {
        peer,
        responder,
        limits,
        stop,
        activity,
    };
    match tls {
        None => connection.drive(tracked).await,
        Some(acceptor) => {
            // The handshake counts against the header read timeout.
            let handshake = acceptor.accept(tracked);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => connection.drive(stream).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in time: closing"),
            }
        }
    }
}

/// Answers one request: the gate's stand-in for a refused head with the 400,
/// any other through `responder`. The handler's future is made in here, so
/// it is held (and moved) once; `busy` ends with the answer. An async block,
/// not an `async fn`, which would hold the request twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn answer<R: Respond>(
    responder: Arc<R>,
    request: Box<Request<Incoming>>,
    refused: bool,
    busy: BusyGuard,
    peer: SocketAddr,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
    async move {
        let response = if refused {
            tracing::debug!(%peer, "request head with a bare LF refused");
            responder.refuse(HeadRefusal::BareLineFeed)
        } else {
            responder.respond(request).await
        };
        drop(busy);
        Ok(response)
    }
}

/// One connection's request handling, over plain TCP or TLS.
struct Served<R> {
    peer: SocketAddr,
    responder: Arc<R>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

impl<R: Respond> Served<R> {
    async fn drive<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Served {
            peer,
            responder,
            limits,
            stop,
            activity,
        } = self;
        let mut stop = StopSignal::new(stop);
        let handoff = Arc::new(Handoff::new());
        let service = {
            let activity = Arc::clone(&activity);
            let handoff = Arc::clone(&handoff);
            service_fn(move |request: Request<Incoming>| {
                let refused = handoff.request_seen(&request.body().size_hint());
                let busy = activity.request_started();
                // Boxed once here: see `Respond::respond`.
                answer(
                    Arc::clone(&responder),
                    Box::new(request),
                    refused,
                    busy,
                    peer,
                )
            })
        };
        let builder = protocols(&limits);
        let io = TokioIo::new(HeadGate::new(io, handoff, MAX_HEAD_BYTES));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        // Once an idle connection is asked to close, it has this long to go.
        let mut close_by: Option<Instant> = None;
        let due = |draining: bool, close_by: Option<Instant>| match close_by {
            Some(at) => Some((at, OnExpiry::Close)),
            // A shutdown drain is bounded by the server's grace.
            None if draining => None,
            None => activity.deadline(&limits),
        };
        let first_check =
            Activity::next_check(due(false, None).map(|(at, _)| at), Instant::now(), &limits);
        let mut check = CheckTimer::at(first_check);
        loop {
            tokio::select! {
                // In this order, every wake-up: the connection is what wakes
                // the task nearly always, and no random start is drawn.
                biased;
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = stop.stopped(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = check.fired() => {
                    let now = Instant::now();
                    match due(draining, close_by) {
                        Some((at, OnExpiry::Close)) if at <= now => {
                            tracing::debug!(%peer, "connection due: closing");
                            return;
                        }
                        Some((at, OnExpiry::Drain)) if at <= now => {
                            draining = true;
                            connection.as_mut().graceful_shutdown();
                            close_by = Some(now + limits.header_read_timeout);
                        }
                        _ => {}
                    }
                    let deadline = due(draining, close_by).map(|(at, _)| at);
                    check.reset(Activity::next_check(deadline, now, &limits));
                }
            }
        }
    }
}
