//! Live reload (SIGHUP): a new config's reloadable keys take effect at once; the others are named.

use std::path::PathBuf;
use std::sync::Arc;

use crate::budget::Budgets;
use crate::config::Settings;
use crate::live::{Live, LiveSettings};
use crate::server::tls::CertResolver;
use crate::telemetry::LogLevel;

/// Applies new settings to a running proxy.
pub struct Reloader {
    live: Arc<LiveSettings>,
    /// `[upstream.budget]` applies to them at once.
    budgets: Arc<Budgets>,
    /// The settings the proxy started with: keys that need a restart keep these.
    started: Settings,
    tls: Option<Arc<CertResolver>>,
    log_level: Option<LogLevel>,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changed keys that only a restart applies; they keep their old values.
    pub needs_restart: Vec<&'static str>,
    /// Set when the new log level was refused (the old one stays).
    pub log_error: Option<String>,
}

impl Reloader {
    pub(crate) fn new(
        live: Arc<LiveSettings>,
        budgets: Arc<Budgets>,
        started: Settings,
        tls: Option<Arc<CertResolver>>,
        log_level: Option<LogLevel>,
    ) -> Reloader {
        Reloader {
            live,
            budgets,
            started,
            tls,
            log_level,
        }
    }

    /// Applies `new` (already validated, its certificate pair parsed): the
    /// live settings are swapped in one step, the budgets' pace, the
    /// certificate and log level follow.
    pub fn apply(&self, new: &Settings) -> ReloadReport {
        self.live.store(Arc::new(Live::from_settings(new)));
        self.budgets.reconfigure(new.upstream.budget);
        if let (Some(resolver), Some(tls)) = (&self.tls, &new.server.tls) {
            resolver.replace(Arc::clone(&tls.pair));
        }
        let log_error = self
            .log_level
            .as_ref()
            .and_then(|log| log.set(&new.log.level).err());
        ReloadReport {
            needs_restart: restart_keys(&self.started, new),
            log_error,
        }
    }
}

/// `("section.key", changed)` for each named key, the name written once.
macro_rules! changes {
    ($old:ident, $new:ident: $($section:ident . $key:ident),+ $(,)?) => {
        [$((
            concat!(stringify!($section), ".", stringify!($key)),
            $old.$section.$key != $new.$section.$key,
        )),+]
    };
}

/// The keys whose change only a restart applies.
fn restart_keys(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let plain = changes!(old, new:
        server.listen, server.admin_listen, server.header_read_timeout,
        server.max_request_body,
        server.idle_timeout, server.max_connections, server.shutdown_grace,
        server.h2_max_concurrent_streams, server.worker_threads,
        upstream.base_url, upstream.connect_timeout, upstream.pool_idle_timeout,
        upstream.max_body, upstream.max_concurrency,
        cache.max_bytes, cache.snapshot_path,
        log.format, log.summary_interval,
    );
    let special = [
        // Turning TLS on or off needs a restart; new paths are read at once.
        (
            "server.tls",
            old.server.tls.is_some() != new.server.tls.is_some(),
        ),
        // The Redis tier is connected once, at start.
        ("shared", old.shared != new.shared),
    ];
    plain
        .into_iter()
        .chain(special)
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// Re-reads `path` (and the environment) on every SIGHUP and applies it; an
/// invalid file changes nothing and the error names the key.
#[cfg(unix)]
pub async fn on_sighup(reloader: Reloader, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: live reload is off");
        return;
    };
    while hangups.recv().await.is_some() {
        match Settings::load(&path) {
            Err(error) => tracing::error!(%error, "config reload refused: nothing changed"),
            Ok(new) => log_report(&reloader.apply(&new)),
        }
    }
}

fn log_report(report: &ReloadReport) {
    if let Some(error) = &report.log_error {
        tracing::error!(%error, "new log level refused");
    }
    if report.needs_restart.is_empty() {
        tracing::info!("config reloaded");
    } else {
        tracing::warn!(
            keys = %report.needs_restart.join(", "),
            "config reloaded; these keys keep their old values until a restart"
        );
    }
}
