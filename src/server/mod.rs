//! The listeners: accept under a connection limit, hand each connection to a worker, drain on shutdown.
//!
//! The public listener answers clients through [`handler`](crate::handler);
//! the optional admin listener answers operators through
//! [`admin`](crate::admin). Both accept on the caller's runtime and hand
//! each connection to one of the [`workers`], which serves it to its end. Both
//! share the shutdown: stop accepting, let open requests finish for at most
//! `server.shutdown_grace`.

mod activity;
mod connection;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod head_gate;
pub mod tls;
pub mod workers;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::admin::AdminState;
use crate::body::ResponseBody;
use crate::cache::SnapshotError;
use crate::config::Settings;
use crate::handler::AppState;
use crate::reload::Reloader;
use crate::summary;
use crate::telemetry::LogLevel;
use connection::ConnectionLimits;
use tls::CertResolver;
use tokio_rustls::TlsAcceptor;
use workers::Workers;

/// Connections the admin listener holds at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Something that answers the requests of one listener.
pub trait Respond: Send + Sync + 'static {
    /// The response to `request`; errors are already turned into responses.
    fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// A bound, not yet running proxy.
pub struct App {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: Arc<AppState>,
    tls: Option<Arc<CertResolver>>,
    settings: Settings,
}

impl App {
    /// Binds `server.listen` (and `server.admin_listen`) and builds the shared state.
    pub async fn build(settings: Settings) -> io::Result<App> {
        let state = Arc::new(AppState::new(&settings));
        // Warm before listening: once the port answers, the cache is loaded.
        if let Some(path) = &settings.cache.snapshot_path {
            warm_start(&state, path).await;
        }
        let tls = match &settings.server.tls {
            Some(tls) => Some(Arc::new(CertResolver::load(tls).map_err(io::Error::other)?)),
            None => None,
        };
        let listener = TcpListener::bind(settings.server.listen).await?;
        let admin_listener = match settings.server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(App {
            listener,
            admin_listener,
            state,
            tls,
            settings,
        })
    }

    /// What applies a new config to this proxy while it runs (SIGHUP).
    pub fn reloader(&self, log_level: Option<LogLevel>) -> Reloader {
        Reloader::new(
            Arc::clone(&self.state),
            self.settings.clone(),
            self.tls.clone(),
            log_level,
        )
    }

    /// The public address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin address actually bound, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let App {
            listener,
            admin_listener,
            state,
            tls,
            settings,
        } = self;
        let server = settings.server;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection holds a sender; when all are gone, the drain is over.
        let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
        let limits = ConnectionLimits::from(&server);
        let workers = Arc::new(Workers::start(server.worker_threads)?);
        let public = Listener {
            tls: tls.as_ref().map(|resolver| resolver.acceptor()),
            ..Listener::new(
                limits,
                server.max_connections,
                &stop_rx,
                &drained_tx,
                &workers,
            )
        };
        tracing::info!(listen = %listener.local_addr()?, "listening");
        let mut loops = vec![tokio::spawn(public.accept(listener, Arc::clone(&state)))];
        if let Some(admin_listener) = admin_listener {
            let admin = Listener::new(
                limits,
                ADMIN_MAX_CONNECTIONS,
                &stop_rx,
                &drained_tx,
                &workers,
            );
            let admin_state = Arc::new(AdminState::new(Arc::clone(&state)));
            tracing::info!(admin_listen = %admin_listener.local_addr()?, "admin listening");
            loops.push(tokio::spawn(admin.accept(admin_listener, admin_state)));
        }
        if let Some(interval) = settings.log.summary_interval {
            let stop = stop_rx.clone();
            tokio::spawn(summary::run(Arc::clone(&state), interval, stop));
        }
        shutdown.await;
        let deadline = Instant::now() + server.shutdown_grace;
        tracing::info!(grace = ?server.shutdown_grace, "shutting down: draining connections");
        let _ = stop_tx.send(true);
        for accept_loop in loops {
            let _ = accept_loop.await;
        }
        drop(drained_tx);
        let drained = tokio::time::timeout_at(deadline.into(), drained_rx.recv()).await;
        if drained.is_err() {
            tracing::warn!("shutdown grace elapsed with requests still open");
        }
        if let Some(path) = &settings.cache.snapshot_path {
            save_snapshot(&state, path, deadline).await;
        }
        Ok(())
    }
}

/// Loads the snapshot, if there is one; any problem is a logged cold start.
async fn warm_start(state: &AppState, path: &Path) {
    let started = Instant::now();
    match state.cache.load_snapshot(path).await {
        Ok((loaded, skipped)) => tracing::info!(
            path = %path.display(),
            loaded,
            skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot loaded: warm start"
        ),
        Err(SnapshotError::Io(error)) if error.kind() == io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no snapshot: cold start");
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "snapshot unusable: cold start");
        }
    }
}

/// Writes the snapshot within what is left of the shutdown grace.
async fn save_snapshot(state: &AppState, path: &Path, deadline: Instant) {
    let started = Instant::now();
    match state.cache.save_snapshot(path, deadline).await {
        Ok(written) => tracing::info!(
            path = %path.display(),
            written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        ),
        Err(error) => tracing::warn!(path = %path.display(), %error, "snapshot not written"),
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
    fn new(
        limits: ConnectionLimits,
        max_connections: usize,
        stop: &watch::Receiver<bool>,
        drained: &mpsc::Sender<()>,
        workers: &Arc<Workers>,
    ) -> Listener {
        Listener {
            limits,
            slots: Arc::new(Semaphore::new(max_connections)),
            stop: stop.clone(),
            drained: drained.clone(),
            tls: None,
            workers: Arc::clone(workers),
        }
    }

    /// Accepts until the stop signal, each connection under a slot.
    async fn accept<R: Respond>(mut self, listener: TcpListener, responder: Arc<R>) {
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
            self.hand_off(stream, peer, slot, Arc::clone(&responder));
        }
    }

    /// Moves an accepted connection onto the least busy worker, which serves it.
    fn hand_off<R: Respond>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        responder: Arc<R>,
    ) {
        // Off this runtime's reactor; the worker registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "accepted connection unusable");
                return;
            }
        };
        let (worker, seat) = self.workers.assign();
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
