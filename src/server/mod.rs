//! The transport: accept under a connection limit, hand each connection to a worker, drain on shutdown.
//!
//! The transport knows only the [`Respond`] trait: what answers a listener's
//! requests is handed in by the composition root ([`crate::app`]). Every
//! listener accepts on the runtime that called [`Transport::serve`] and hands
//! each connection to one of the [`workers`], which serves it to its end.
//! All listeners share one shutdown: [`Transport::drain`] stops accepting and
//! lets open requests finish within a grace.

mod activity;
mod check_timer;
mod connection;
mod connection_clock;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod head_gate;
mod last_waker;
mod limits;
mod stop_signal;
pub mod tls;
pub mod workers;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::body::ResponseBody;
use crate::config::ServerSettings;
use limits::ConnectionLimits;
use workers::Workers;

/// Something that answers the requests of one listener.
///
/// Each worker answers with a clone of its own: every request takes an
/// owned reference to its responder (a handler's future outlives the call
/// that made it), and a reference count that every worker writes on every
/// request bounces between their CPUs' caches. A clone should share its
/// state, not copy it.
pub trait Respond: Clone + Send + Sync + 'static {
    /// The response to `request`; errors are already turned into responses.
    /// The request comes boxed: it is a few hundred bytes that every level
    /// of the handler's future would otherwise copy (see docs/decisions.md).
    fn respond(
        self: Arc<Self>,
        request: Box<Request<Incoming>>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;

    /// The answer to a request whose head the transport refused before it
    /// reached [`Respond::respond`]; the connection closes after it.
    fn refuse(&self, refusal: HeadRefusal) -> Response<ResponseBody>;
}

/// Why the transport refused a request head on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// A head line ended in a bare LF: hyper would accept it, a stricter
    /// server behind or beside us might frame it differently.
    BareLineFeed,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the grace.
    Complete,
    /// The grace ran out with requests still open.
    GraceElapsed,
}

/// The running transport: workers, accept loops and the drain they share.
pub struct Transport {
    limits: ConnectionLimits,
    workers: Arc<Workers>,
    stop_tx: watch::Sender<bool>,
    /// Every connection holds a sender; when all are gone, the drain is over.
    drained_tx: mpsc::Sender<()>,
    drained_rx: mpsc::Receiver<()>,
    accept_loops: Vec<JoinHandle<()>>,
}

impl Transport {
    /// Starts the workers `server` asks for; no listener yet.
    pub fn start(server: &ServerSettings) -> io::Result<Transport> {
        let (stop_tx, _) = watch::channel(false);
        let (drained_tx, drained_rx) = mpsc::channel::<()>(1);
        Ok(Transport {
            limits: ConnectionLimits::from(server),
            workers: Arc::new(Workers::start(server.worker_threads)?),
            stop_tx,
            drained_tx,
            drained_rx,
            accept_loops: Vec::new(),
        })
    }

    /// Accepts on `listener` until the drain, at most `max_connections` at
    /// once, each connection answered by a clone of `responder` that is its
    /// worker's own (over TLS with `tls`).
    pub fn serve<R: Respond>(
        &mut self,
        listener: TcpListener,
        responder: R,
        max_connections: usize,
        tls: Option<TlsAcceptor>,
    ) {
        let responders = (0..self.workers.count())
            .map(|_| Arc::new(responder.clone()))
            .collect();
        let accept = Listener {
            limits: self.limits,
            slots: Arc::new(Semaphore::new(max_connections)),
            stop: self.stop_tx.subscribe(),
            drained: self.drained_tx.clone(),
            tls,
            workers: Arc::clone(&self.workers),
        };
        self.accept_loops
            .push(tokio::spawn(accept.accept(listener, responders)));
    }

    /// Stops accepting and lets open requests finish until `deadline` at most.
    pub async fn drain(self, deadline: Instant) -> Drain {
        let Transport {
            stop_tx,
            drained_tx,
            mut drained_rx,
            accept_loops,
            ..
        } = self;
        let _ = stop_tx.send(true);
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        drop(drained_tx);
        match tokio::time::timeout_at(deadline.into(), drained_rx.recv()).await {
            Ok(_) => Drain::Complete,
            Err(_) => Drain::GraceElapsed,
        }
    }
}

/// What one accept loop needs.
struct Listener {
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
    tls: Option<TlsAcceptor>,
    workers: Arc<Workers>,
}

impl Listener {
    /// Accepts until the stop signal, each connection under a slot;
    /// `responders` has one per worker, by the worker's index.
    async fn accept<R: Respond>(mut self, listener: TcpListener, responders: Vec<Arc<R>>) {
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                _ = self.stop.changed() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Typically out of file descriptors: back off, don't spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.stop.changed() => return,
            };
            self.hand_off(stream, peer, slot, &responders);
        }
    }

    /// Moves an accepted connection onto the least busy worker, which serves it.
    fn hand_off<R: Respond>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        responders: &[Arc<R>],
    ) {
        // Off this runtime's reactor; the worker registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "accepted connection unusable");
                return;
            }
        };
        let (index, worker, seat) = self.workers.assign();
        let responder = Arc::clone(&responders[index]);
        let stop = self.stop.clone();
        let drained = self.drained.clone();
        let limits = self.limits;
        let tls = self.tls.clone();
        worker.spawn(async move {
            // Given up when the connection ends: its seat, its slot, its part of the drain.
            let _held = (seat, slot, drained);
            match TcpStream::from_std(stream) {
                Ok(stream) => connection::serve(stream, peer, responder, limits, stop, tls).await,
                Err(error) => tracing::warn!(%peer, %error, "accepted connection unusable"),
            }
        });
    }
}
