//! The listener: accepts under `server.max_connections`, serves each connection, drains on shutdown.

mod connection;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{ServerSettings, Settings};
use crate::handler::AppState;
use connection::ConnectionLimits;

/// A bound, not yet running proxy.
pub struct App {
    listener: TcpListener,
    state: Arc<AppState>,
    server: ServerSettings,
}

impl App {
    /// Binds `server.listen` and builds the shared state.
    pub async fn build(settings: Settings) -> io::Result<App> {
        let listener = TcpListener::bind(settings.server.listen).await?;
        Ok(App {
            listener,
            state: Arc::new(AppState::new(&settings)),
            server: settings.server,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets open
    /// requests finish for at most `server.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let App {
            listener,
            state,
            server,
        } = self;
        let limits = ConnectionLimits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
        };
        let slots = Arc::new(Semaphore::new(server.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection holds a sender; when all are gone, the drain is over.
        let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        tracing::info!(listen = %listener.local_addr()?, "listening");
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot.map_err(io::Error::other)?,
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let state = Arc::clone(&state);
            let stop = stop_rx.clone();
            let drained = drained_tx.clone();
            tokio::spawn(async move {
                connection::serve(stream, peer, state, limits, stop).await;
                drop(slot);
                drop(drained);
            });
        }
        drop(listener);
        tracing::info!(grace = ?server.shutdown_grace, "shutting down: draining connections");
        let _ = stop_tx.send(true);
        drop(drained_tx);
        let drained = tokio::time::timeout(server.shutdown_grace, drained_rx.recv()).await;
        if drained.is_err() {
            tracing::warn!("shutdown grace elapsed with requests still open");
        }
        Ok(())
    }
}
