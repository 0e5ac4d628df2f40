//! Logging: the tracing subscriber, its format, and its level changed at run time.

mod access_json;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogSettings};
use access_json::{AccessJson, ACCESS_TARGET};

/// Changes the log filter of the running process (a config reload).
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogLevel {
    /// Applies a `tracing` filter directive, e.g. `info` or `ayra_cache=debug`.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::builder()
            .parse(level)
            .map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber: JSON or human-readable on stderr, filtered
/// by `log.level`; in JSON the access events take a faster path of their own.
/// Returns the handle that changes the level later.
pub fn init(settings: &LogSettings) -> LogLevel {
    let filter = EnvFilter::builder()
        .parse(&settings.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match settings.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter_fn(|meta| meta.target() != ACCESS_TARGET))
            .and_then(AccessJson)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    // Already installed when tests run many apps in one process: keep that one.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    LogLevel { handle }
}
