//! A connection's activity: which phase of its request cycle it is in, and when it is due to be cut.
//!
//! hyper's own header timeout starts as soon as a keep-alive connection waits
//! for its next request, so it cannot tell a slow head from an idle client.
//! This module watches the connection's bytes itself: a new connection, or a
//! request head once its first byte arrived, has `header_read_timeout`; an
//! idle keep-alive connection has `idle_timeout`, counted from the last byte
//! written to it, so a client reading a long answer slowly is not idle.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::connection::ConnectionLimits;

/// What to do when a connection's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnExpiry {
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
    /// Requests are being answered; `read_more` when bytes of a next
    /// (pipelined) request arrived meanwhile.
    Busy { requests: usize, read_more: bool },
}

/// The connection's phase, shared by its IO and its service.
pub(super) struct Activity {
    phase: Mutex<Phase>,
    /// Woken when the phase changes.
    pub changed: Notify,
    /// When the connection was accepted.
    origin: Instant,
    /// Milliseconds after `origin` of the last byte written.
    last_write_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        let origin = Instant::now();
        Activity {
            phase: Mutex::new(Phase::Idle {
                since: origin,
                first: true,
            }),
            changed: Notify::new(),
            origin,
            last_write_ms: AtomicU64::new(0),
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = change(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        match *phase {
            Phase::Idle { .. } => {
                *phase = Phase::ReadingHead {
                    since: Instant::now(),
                };
                drop(phase);
                self.changed.notify_one();
            }
            Phase::Busy { requests, .. } => {
                *phase = Phase::Busy {
                    requests,
                    read_more: true,
                };
            }
            Phase::ReadingHead { .. } => {}
        }
    }

    fn bytes_written(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_write_ms.store(ms, Ordering::Relaxed);
    }

    fn last_write(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed))
    }

    /// A request's head was read; the guard marks its end when dropped.
    pub fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.update(|phase| match phase {
            Phase::Busy {
                requests,
                read_more,
            } => Phase::Busy {
                requests: requests + 1,
                read_more,
            },
            _ => Phase::Busy {
                requests: 1,
                read_more: false,
            },
        });
        BusyGuard(Arc::clone(self))
    }

    /// When the connection is next due to be cut, and how.
    pub fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, OnExpiry)> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Idle { since, first: true } | Phase::ReadingHead { since } => {
                Some((since + limits.header_read_timeout, OnExpiry::Close))
            }
            Phase::Idle {
                since,
                first: false,
            } => {
                let last_progress = since.max(self.last_write());
                Some((last_progress + limits.idle_timeout, OnExpiry::Drain))
            }
            Phase::Busy { .. } => None,
        }
    }
}

/// Marks the end of a request when dropped, even if the handler was cancelled.
pub(super) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy {
                requests,
                read_more,
            } if requests > 1 => Phase::Busy {
                requests: requests - 1,
                read_more,
            },
            // A pipelined head already began: its clock runs from now.
            Phase::Busy {
                read_more: true, ..
            } => Phase::ReadingHead {
                since: Instant::now(),
            },
            _ => Phase::Idle {
                since: Instant::now(),
                first: false,
            },
        });
    }
}

/// The TCP stream, reporting reads and writes to the connection's [`Activity`].
pub(super) struct Tracked {
    pub inner: TcpStream,
    pub activity: Arc<Activity>,
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        polled
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
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
