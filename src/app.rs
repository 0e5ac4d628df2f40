//! The composition root: builds the proxy's parts from the settings, wires them to the
//! transport, and owns their shutdown.
//!
//! [`App::build`] makes the state every request shares (live settings,
//! upstream client, cache, metrics), warms the cache from a snapshot, and
//! binds the listeners. [`App::run`] starts the transport with the public
//! listener answered by [`handler`](crate::handler) and the admin listener by
//! [`admin`](crate::admin), spawns the background tasks (the summary), and on
//! shutdown drains the transport, writes the snapshot and stops the tasks. The
//! [`Reloader`] it hands out applies SIGHUP's new settings to the same parts.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminState;
use crate::budget::{BudgetMetrics, Budgets};
use crate::cache::{Cache, CacheTasks, SnapshotError};
use crate::config::Settings;
use crate::live;
use crate::metrics::Metrics;
use crate::passthrough::{BodyLimits, PassThrough};
use crate::reload::Reloader;
use crate::server::tls::CertResolver;
use crate::server::{Drain, Transport};
use crate::spending;
use crate::state::AppState;
use crate::summary;
use crate::telemetry::LogLevel;
use crate::upstream::Upstream;

/// Connections the admin listener holds at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// How often budgets nobody uses are dropped.
const BUDGET_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A bound, not yet running proxy.
pub struct App {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: Arc<AppState>,
    /// Spawned by [`App::run`], on the runtime that runs it.
    cache_tasks: CacheTasks,
    tls: Option<Arc<CertResolver>>,
    settings: Settings,
}

impl App {
    /// Builds the shared state, warms the cache, and binds `server.listen`
    /// (and `server.admin_listen`).
    pub async fn build(settings: Settings) -> io::Result<App> {
        let (state, cache_tasks) = state(&settings);
        let state = Arc::new(state);
        // Warm before listening: once the port answers, the cache is loaded.
        if let Some(path) = &settings.cache.snapshot_path {
            warm_start(&state.cache, path).await;
        }
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(|tls| Arc::new(CertResolver::new(Arc::clone(&tls.pair))));
        let listener = TcpListener::bind(settings.server.listen).await?;
        let admin_listener = match settings.server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(App {
            listener,
            admin_listener,
            state,
            cache_tasks,
            tls,
            settings,
        })
    }

    /// What applies a new config to this proxy while it runs (SIGHUP).
    pub fn reloader(&self, log_level: Option<LogLevel>) -> Reloader {
        Reloader::new(
            Arc::clone(&self.state.live),
            Arc::clone(&self.state.budgets),
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

    /// Serves until `shutdown` completes, then drains, writes the snapshot
    /// and stops the background tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let App {
            listener,
            admin_listener,
            state,
            cache_tasks,
            tls,
            settings,
        } = self;
        let server = &settings.server;
        let mut transport = Transport::start(server)?;
        tracing::info!(listen = %listener.local_addr()?, "listening");
        let acceptor = tls.as_ref().map(|resolver| resolver.acceptor());
        transport.serve(
            listener,
            AppState::clone(&state),
            server.max_connections,
            acceptor,
        );
        if let Some(admin_listener) = admin_listener {
            tracing::info!(admin_listen = %admin_listener.local_addr()?, "admin listening");
            let admin = AdminState::new(
                Arc::clone(&state.cache),
                Arc::clone(&state.metrics),
                Arc::clone(&state.live),
                Arc::clone(&state.budgets),
            );
            transport.serve(admin_listener, admin, ADMIN_MAX_CONNECTIONS, None);
        }
        let tasks = BackgroundTasks::start(&settings, &state, cache_tasks);

        shutdown.await;
        let deadline = Instant::now() + server.shutdown_grace;
        tracing::info!(grace = ?server.shutdown_grace, "shutting down: draining connections");
        if transport.drain(deadline).await == Drain::GraceElapsed {
            tracing::warn!("shutdown grace elapsed with requests still open");
        }
        if let Some(path) = &settings.cache.snapshot_path {
            save_snapshot(&state.cache, path, deadline).await;
        }
        tasks.stop().await;
        Ok(())
    }
}

/// The state the settings describe (an empty cache and an idle client
/// pool), and the cache's background work, not yet spawned.
fn state(settings: &Settings) -> (AppState, CacheTasks) {
    let metrics = Arc::new(Metrics::new());
    let (cache, cache_tasks) = Cache::new(
        &settings.cache,
        settings.shared.as_ref(),
        Arc::clone(&metrics),
    );
    let upstream = Arc::new(Upstream::new(&settings.upstream, Arc::clone(&metrics)));
    let budget_metrics = metrics.register_with(BudgetMetrics::register);
    // With `[shared]`, every replica leases its calls from one bucket per
    // credential in Redis and hears of the others' pauses.
    let budgets = Arc::new(Budgets::sharing(
        settings.upstream.budget,
        Arc::new(budget_metrics),
        cache.shared_tier(),
    ));
    let body_limits = BodyLimits::from(&settings.server);
    let state = AppState {
        live: Arc::new(live::hold(settings)),
        passthrough: PassThrough::new(Arc::clone(&upstream), Arc::clone(&budgets), body_limits),
        upstream,
        budgets,
        cache: Arc::new(cache),
        metrics,
    };
    (state, cache_tasks)
}

/// The tasks that run beside the listeners, on the runtime that runs
/// [`App::run`] (the control runtime, never a worker's): the cache's own work,
/// the budgets' sweep, the pauses other replicas tell of, and the summary. Dropping this aborts them (as tokio's mini-redis does
/// with its `DbDropGuard`), so none outlives the proxy.
struct BackgroundTasks {
    stop: watch::Sender<bool>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl BackgroundTasks {
    fn start(settings: &Settings, state: &AppState, cache_tasks: CacheTasks) -> BackgroundTasks {
        let (stop, stopped) = watch::channel(false);
        let mut running: Vec<_> = cache_tasks
            .into_iter()
            .map(|(name, task)| {
                tracing::debug!(task = name, "background task started");
                (name, tokio::spawn(task))
            })
            .collect();
        let budgets = Arc::clone(&state.budgets);
        let sweep = spending::sweep_budgets(budgets, BUDGET_SWEEP_EVERY, stopped.clone());
        running.push(("budget sweep", tokio::spawn(sweep)));
        if let Some(follow) = state.budgets.follow_shared_pauses() {
            running.push(("shared budget pauses", tokio::spawn(follow)));
        }
        if let Some(interval) = settings.log.summary_interval {
            let (metrics, cache) = (Arc::clone(&state.metrics), Arc::clone(&state.cache));
            let summary = tokio::spawn(summary::run(metrics, cache, interval, stopped));
            running.push(("summary", summary));
        }
        BackgroundTasks { stop, running }
    }

    /// Stops every task and waits until each has ended.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        for (name, task) in std::mem::take(&mut self.running) {
            task.abort();
            if let Err(error) = task.await {
                if error.is_panic() {
                    tracing::error!(task = name, "background task panicked");
                }
            }
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for (_, task) in &self.running {
            task.abort();
        }
    }
}

/// Loads the snapshot, if there is one; any problem is a logged cold start.
async fn warm_start(cache: &Cache, path: &Path) {
    let started = Instant::now();
    match cache.load_snapshot(path).await {
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
async fn save_snapshot(cache: &Cache, path: &Path, deadline: Instant) {
    let started = Instant::now();
    match cache.save_snapshot(path, deadline).await {
        Ok(written) => tracing::info!(
            path = %path.display(),
            written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        ),
        Err(error) => tracing::warn!(path = %path.display(), %error, "snapshot not written"),
    }
}
