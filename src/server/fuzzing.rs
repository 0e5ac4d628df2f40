//! The request-head gate as the listener wraps it, reachable from outside the crate for its fuzz target and corpus replay only.
//!
//! Not part of the proxy's interface: `fuzz/checks/head_gate.rs` feeds byte
//! streams through [`gate`] into a real hyper connection and compares what
//! hyper parses with and without it.

use std::sync::Arc;

use hyper::body::SizeHint;
use tokio::io::{AsyncRead, AsyncWrite};

use super::head_gate::{Handoff, HeadGate, STAND_IN};

/// What hyper parses in place of a refused head.
pub const REFUSED_HEAD_STAND_IN: &[u8] = STAND_IN;

/// The connection's side of the gate: its service calls
/// [`request_seen`](GateHandoff::request_seen) for every request hyper hands over.
pub struct GateHandoff(Arc<Handoff>);

impl GateHandoff {
    /// hyper handed a request over with this body size hint: true when it is
    /// the stand-in for a refused head (answered 400 without routing).
    pub fn request_seen(&self, hint: &SizeHint) -> bool {
        self.0.request_seen(hint)
    }
}

/// `io` behind the head gate, as `server::connection` wraps a client's
/// stream, with heads over `max_head` bytes given to hyper as they are.
pub fn gate<IO>(io: IO, max_head: usize) -> (impl AsyncRead + AsyncWrite + Unpin, GateHandoff)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handoff = Arc::new(Handoff::new());
    let gated = HeadGate::new(io, Arc::clone(&handoff), max_head);
    (gated, GateHandoff(handoff))
}
