//! The request-head gate: hyper is given a request head only once it is whole, and only if every line ends in CRLF.
//!
//! httparse (and so hyper) takes a bare LF as a line ending and has no
//! setting to refuse it. The gate sits between the connection's stream
//! (above TLS) and hyper, and follows the bytes with [`Framing`]: the common
//! case (a whole head, or body bytes, in one read) goes straight into
//! hyper's buffer with one `memchr` pass over the head; the bytes of an
//! unfinished head are held until its blank line arrives (a connection's
//! first head always is: hyper-util reads 24 bytes to tell HTTP/2 first).
//!
//! A head with a bare LF never reaches hyper: whatever came before it is
//! given as usual, then a stand-in head ([`STAND_IN`]) that the connection's
//! service recognises through the [`Handoff`] and answers with `400
//! invalid_line_ending` without routing it, in order after any pipelined
//! answers before it; then the connection is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::body::SizeHint;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{BodyFraming, Framing, Stop};

/// What hyper parses in place of a refused head.
pub(super) const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";
/// Bytes read at once into the gate's own buffer while a head is unfinished.
const READ_CHUNK: usize = 4096;

/// [`Handoff::body`] values that are not a length.
const NO_REQUEST: u64 = u64::MAX;
const CHUNKED: u64 = u64::MAX - 1;

/// What the connection's service and its gate tell each other.
pub(super) struct Handoff {
    /// The framing of the last request hyper handed over (a length,
    /// [`CHUNKED`], or [`NO_REQUEST`] once the gate took it).
    body: AtomicU64,
    /// The next request hyper hands over is the stand-in for a refused head.
    refused: AtomicBool,
}

impl Handoff {
    pub fn new() -> Handoff {
        Handoff {
            body: AtomicU64::new(NO_REQUEST),
            refused: AtomicBool::new(false),
        }
    }

    /// hyper handed a request over, its body sized as `hint`: true when it is
    /// the stand-in for a refused head, to be answered without routing.
    pub fn request_seen(&self, hint: &SizeHint) -> bool {
        let body = hint
            .exact()
            .map_or(CHUNKED, |length| length.min(CHUNKED - 1));
        self.body.store(body, Ordering::Release);
        self.refused.swap(false, Ordering::AcqRel)
    }

    fn take_body(&self) -> Option<BodyFraming> {
        match self.body.swap(NO_REQUEST, Ordering::AcqRel) {
            NO_REQUEST => None,
            CHUNKED => Some(BodyFraming::Chunked),
            length => Some(BodyFraming::Length(length)),
        }
    }
}

/// Bytes read from the client that hyper has not been given yet.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// Given to hyper already.
    given: usize,
    /// May be given: everything before an unfinished head.
    cleared: usize,
    /// Classified: past `cleared`, the unfinished head's bytes so far.
    scanned: usize,
}

impl Held {
    /// Gives `buf` what is cleared; false when there is nothing.
    #[inline]
    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let count = (self.cleared - self.given).min(buf.remaining());
        if count == 0 {
            return false;
        }
        self.give_some(buf, count);
        true
    }

    fn give_some(&mut self, buf: &mut ReadBuf<'_>, count: usize) {
        buf.put_slice(&self.bytes[self.given..self.given + count]);
        self.given += count;
        if self.given == self.cleared {
            // Keep the capacity; move the unfinished rest to the front.
            self.bytes.drain(..self.given);
            self.scanned -= self.given;
            (self.given, self.cleared) = (0, 0);
        }
    }
}

/// A client stream whose request heads are checked before hyper reads them.
pub(super) struct HeadGate<IO> {
    inner: IO,
    handoff: Arc<Handoff>,
    framing: Framing,
    held: Held,
    /// Once a head is refused: how much of the stand-in hyper was given.
    refused: Option<usize>,
    /// An unfinished head longer than this is given to hyper as it is (hyper answers 431).
    max_head: usize,
}

impl<IO> HeadGate<IO> {
    pub fn new(inner: IO, handoff: Arc<Handoff>, max_head: usize) -> HeadGate<IO> {
        HeadGate {
            inner,
            handoff,
            framing: Framing::new(),
            held: Held::default(),
            refused: None,
            max_head,
        }
    }

    /// A head ended and hyper has read it since: its body's framing is known.
    fn resolve_body(&mut self) {
        if self.framing.awaits_body() {
            self.framing.body(self.handoff.take_body());
        }
    }

    /// Classifies the held bytes not classified yet; false when there were none.
    fn classify_held(&mut self) -> bool {
        let base = self.held.scanned;
        if base == self.held.bytes.len() {
            return false;
        }
        self.resolve_body();
        let step = self.framing.advance(&self.held.bytes[base..]);
        if step.cleared > 0 {
            self.held.cleared = base + step.cleared;
        }
        self.settle(step.stop);
        true
    }

    /// Records where the classification stopped, `held.cleared` already set.
    fn settle(&mut self, stop: Stop) {
        let held = &mut self.held;
        match stop {
            Stop::Consumed => {
                held.scanned = held.bytes.len();
                if held.scanned - held.cleared > self.max_head {
                    self.framing.stop_following();
                    held.cleared = held.scanned;
                }
            }
            Stop::HeadEnded => held.scanned = held.cleared,
            Stop::BareLf => {
                held.bytes.truncate(held.cleared);
                held.scanned = held.cleared;
                self.refused = Some(0);
                self.handoff.refused.store(true, Ordering::Release);
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> HeadGate<IO> {
    /// Reads straight into hyper's buffer (nothing is held): Ready(true)
    /// when `buf` got bytes or the client closed.
    fn read_direct(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return Poll::Ready(Ok(true));
        }
        self.resolve_body();
        let step = self.framing.advance(read);
        if step.cleared < read.len() {
            self.held.bytes.extend_from_slice(&read[step.cleared..]);
            buf.set_filled(before + step.cleared);
        }
        self.settle(step.stop);
        Poll::Ready(Ok(step.cleared > 0))
    }

    /// Reads more into the gate's own buffer, behind the held bytes.
    fn read_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let bytes = &mut self.held.bytes;
        let len = bytes.len();
        bytes.resize(len + READ_CHUNK, 0);
        let mut read = ReadBuf::new(&mut bytes[len..]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut read);
        let count = read.filled().len();
        bytes.truncate(len + count);
        ready!(polled)?;
        if count == 0 {
            // The client closed: hyper gets what it sent, as it sent it.
            self.framing.stop_following();
            (self.held.cleared, self.held.scanned) = (len, len);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadGate<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let gate = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if gate.held.give(buf) {
                return Poll::Ready(Ok(()));
            }
            if let Some(given) = &mut gate.refused {
                // The stand-in, then end of stream.
                let rest = &STAND_IN[*given..];
                let count = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..count]);
                *given += count;
                return Poll::Ready(Ok(()));
            }
            if gate.classify_held() {
                continue;
            }
            if gate.held.bytes.is_empty() {
                if ready!(gate.read_direct(cx, buf))? {
                    return Poll::Ready(Ok(()));
                }
            } else {
                ready!(gate.read_held(cx))?;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadGate<IO> {
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
