//! One client connection: HTTP/1.1 or HTTP/2, with head limits, a header read timeout and an idle timeout.
//!
//! hyper's own header timeout starts as soon as a keep-alive connection waits
//! for its next request, so it cannot tell a slow head from an idle client.
//! This module watches the connection's bytes itself: a new connection, or a
//! request head once its first byte arrived, has `header_read_timeout`; an
//! idle keep-alive connection has `idle_timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use super::Respond;
use crate::config::ServerSettings;

/// Largest request head accepted; past it hyper answers 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields accepted; past it hyper answers 431.
const MAX_HEADERS: usize = 100;
/// HTTP/2 streams a client may reset before they are even answered, before
/// the connection is cut (the 2023 rapid-reset class of attacks).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams the server may reset for protocol errors before cutting the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// The per-connection time limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

impl From<&ServerSettings> for ConnectionLimits {
    fn from(server: &ServerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            h2_max_concurrent_streams: server.h2_max_concurrent_streams,
        }
    }
}

/// HTTP/1.1 and HTTP/2 (by prior knowledge, or ALPN under TLS) on one port.
fn protocols(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_headers(MAX_HEADERS)
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
        None => connection.drive(TokioIo::new(tracked)).await,
        Some(acceptor) => {
            // The handshake counts against the header read timeout.
            let handshake = acceptor.accept(tracked);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => connection.drive(TokioIo::new(stream)).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in time: closing"),
            }
        }
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
    async fn drive<IO>(self, io: TokioIo<IO>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Served {
            peer,
            responder,
            limits,
            mut stop,
            activity,
        } = self;
        let service = {
            let activity = Arc::clone(&activity);
            service_fn(move |request| {
                let busy = activity.request_started();
                let response = Arc::clone(&responder).respond(request);
                async move {
                    let response = response.await;
                    drop(busy);
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let builder = protocols(&limits);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            let deadline = activity.deadline(&limits);
            let wake = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.changed.notified() => {}
                () = wake => match deadline.map(|(_, on_expiry)| on_expiry) {
                    Some(OnExpiry::Close) => {
                        tracing::debug!(%peer, "request head not received in time: closing");
                        return;
                    }
                    Some(OnExpiry::Drain) if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ => {}
                },
            }
        }
    }
}

/// What to do when a connection's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnExpiry {
    /// A request head is late: drop the connection.
    Close,
    /// An idle keep-alive connection: close it politely.
    Drain,
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the first byte of a request head.
    Idle { since: Instant, first: bool },
    /// Some of a request head arrived.
    ReadingHead { since: Instant },
    /// Requests are being answered.
    Busy { requests: usize },
}

/// The connection's phase, shared by its IO and its service.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
                first: true,
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = change(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        let idle = matches!(
            *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            Phase::Idle { .. }
        );
        if idle {
            self.update(|phase| match phase {
                Phase::Idle { .. } => Phase::ReadingHead {
                    since: Instant::now(),
                },
                other => other,
            });
        }
    }

    fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
        BusyGuard(Arc::clone(self))
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, OnExpiry)> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Idle { since, first: true } | Phase::ReadingHead { since } => {
                Some((since + limits.header_read_timeout, OnExpiry::Close))
            }
            Phase::Idle {
                since,
                first: false,
            } => Some((since + limits.idle_timeout, OnExpiry::Drain)),
            Phase::Busy { .. } => None,
        }
    }
}

/// Marks the end of a request when dropped, even if the handler was cancelled.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
                first: false,
            },
        });
    }
}

/// The TCP stream, reporting reads to the connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
