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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection_clock::ConnectionClock;
use super::limits::ConnectionLimits;
use phase::{Phase, SharedPhase};

mod phase;

/// What to do when a connection's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnExpiry {
    /// A request head is late: drop the connection.
    Close,
    /// An idle keep-alive connection: close it politely.
    Drain,
}

/// The connection's phase, shared by its IO and its service.
pub(super) struct Activity {
    phase: SharedPhase,
    /// Time since the connection was accepted, read cheaply on every change.
    clock: ConnectionClock,
    /// When the last byte was written, on `clock`.
    last_write_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            phase: SharedPhase::new(Phase::Idle {
                since_ms: 0,
                first: true,
            }),
            clock: ConnectionClock::start(),
            last_write_ms: AtomicU64::new(0),
        }
    }

    fn bytes_read(&self) {
        self.phase.update(|phase| match phase {
            Phase::Idle { .. } => Phase::ReadingHead {
                since_ms: self.clock.now_ms(),
            },
            Phase::Busy { requests, .. } => Phase::Busy {
                requests,
                read_more: true,
            },
            Phase::ReadingHead { .. } => phase,
        });
    }

    fn bytes_written(&self) {
        self.wrote_at(self.clock.now_ms());
    }

    fn wrote_at(&self, ms: u64) {
        self.last_write_ms.store(ms, Ordering::Relaxed);
    }

    /// A request's head was read; the guard marks its end when dropped.
    pub fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.phase.update(|phase| match phase {
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

    /// The longest a connection may go unchecked: no phase change sets a
    /// deadline sooner than this after it (see [`Activity::next_check`]).
    pub fn check_interval(limits: &ConnectionLimits) -> Duration {
        limits.header_read_timeout.min(limits.idle_timeout)
    }

    /// When to look at the connection again, looking at `now`: its deadline,
    /// or one check interval on, whichever is sooner.
    ///
    /// Phase changes wake no one. Every deadline a change sets is at least one
    /// check interval after the change, so after the check it is never
    /// sooner than this; a connection's timer is re-armed only when it
    /// fires, never by a request.
    pub fn next_check(
        deadline: Option<Instant>,
        now: Instant,
        limits: &ConnectionLimits,
    ) -> Instant {
        let interval = now + Activity::check_interval(limits);
        deadline.map_or(interval, |at| at.min(interval))
    }

    /// When the connection is next due to be cut, and how.
    pub fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, OnExpiry)> {
        match self.phase.get() {
            Phase::Idle {
                since_ms,
                first: true,
            }
            | Phase::ReadingHead { since_ms } => Some((
                self.clock.instant(since_ms) + limits.header_read_timeout,
                OnExpiry::Close,
            )),
            Phase::Idle {
                since_ms,
                first: false,
            } => {
                let last_progress = since_ms.max(self.last_write_ms.load(Ordering::Relaxed));
                Some((
                    self.clock.instant(last_progress) + limits.idle_timeout,
                    OnExpiry::Drain,
                ))
            }
            Phase::Busy { .. } => None,
        }
    }
}

/// Marks the end of a request when dropped, even if the handler was cancelled.
pub(super) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let clock = &self.0.clock;
        self.0.phase.update(|phase| match phase {
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
                since_ms: clock.now_ms(),
            },
            _ => Phase::Idle {
                since_ms: clock.now_ms(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_read_timeout: u64, idle_timeout: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(header_read_timeout),
            idle_timeout: Duration::from_millis(idle_timeout),
            h2_max_concurrent_streams: 100,
        }
    }

    fn at(activity: &Activity, limits: &ConnectionLimits) -> Option<Instant> {
        activity.deadline(limits).map(|(at, _)| at)
    }

    #[test]
    fn the_next_check_is_the_deadline_or_one_interval_whichever_is_sooner() {
        let limits = limits(300, 5_000);
        let now = Instant::now();
        let interval = Duration::from_millis(300);
        let soon = now + Duration::from_millis(100);
        assert_eq!(Activity::next_check(Some(soon), now, &limits), soon);
        let late = now + Duration::from_secs(5);
        assert_eq!(
            Activity::next_check(Some(late), now, &limits),
            now + interval
        );
        assert_eq!(Activity::next_check(None, now, &limits), now + interval);
        // The shorter of the two timeouts sets the interval.
        let limits = self::limits(5_000, 200);
        assert_eq!(
            Activity::check_interval(&limits),
            Duration::from_millis(200)
        );
    }

    /// The rule the connection's lazy timer rests on: after a check, no phase
    /// change sets a deadline sooner than the check it armed.
    #[test]
    fn no_phase_change_sets_a_deadline_before_the_armed_check() {
        for limits in [limits(300, 5_000), limits(5_000, 300)] {
            let activity = Arc::new(Activity::new());
            let mut armed = Activity::next_check(at(&activity, &limits), Instant::now(), &limits);
            let mut after_change = |activity: &Activity| {
                if let Some(deadline) = at(activity, &limits) {
                    assert!(deadline >= armed, "a deadline before the armed check");
                }
                armed = Activity::next_check(at(activity, &limits), Instant::now(), &limits);
            };
            for _ in 0..3 {
                activity.bytes_read();
                after_change(&activity);
                let busy = activity.request_started();
                after_change(&activity);
                // A pipelined head arrives while the first is answered.
                activity.bytes_read();
                let second = activity.request_started();
                drop(busy);
                after_change(&activity);
                activity.bytes_written();
                drop(second);
                after_change(&activity);
            }
        }
    }

    #[test]
    fn an_idle_connection_is_due_from_its_last_write() {
        let limits = limits(300, 5_000);
        let activity = Arc::new(Activity::new());
        // A new connection waits for its first head under header_read_timeout.
        let (first, how) = activity.deadline(&limits).unwrap();
        assert_eq!(how, OnExpiry::Close);
        // Counted from accept (reading 0), never before it.
        assert_eq!(
            first,
            activity.clock.instant(0) + Duration::from_millis(300)
        );
        assert!(first >= activity.clock.origin() + Duration::from_millis(300));
        drop(activity.request_started());
        let (idle, how) = activity.deadline(&limits).unwrap();
        assert_eq!(how, OnExpiry::Drain);
        assert!(idle >= first + Duration::from_millis(4_700));
        // A client still reading a long answer is not idle: the clock runs from the last write.
        activity.wrote_at(20_000);
        let (idle, _) = activity.deadline(&limits).unwrap();
        let written = activity.clock.instant(20_000);
        assert_eq!(idle, written + Duration::from_millis(5_000));
        let busy = activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
        drop(busy);
    }
}
