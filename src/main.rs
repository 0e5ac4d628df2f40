//! The `ayra-cache` binary: parse arguments, load config, start telemetry, run until a signal
//! (SIGTERM/SIGINT stop it, SIGHUP reloads the config).

use std::path::PathBuf;
use std::process::ExitCode;

use ayra_cache::config::Settings;
use ayra_cache::server::workers;
use ayra_cache::telemetry::{self, LogLevel};
use ayra_cache::{reload, App};
use clap::Parser;

/// jemalloc, not the system allocator: the cache holds many long-lived
/// bodies of a few KB among short-lived buffers, and glibc's malloc let
/// that mix fragment its heap (RSS moved by a fifth with unrelated code
/// changes); jemalloc's size classes keep RSS close to what is held.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A caching reverse proxy for the Ayra conversations API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML config file.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Validate the config and exit (0 when valid, 2 when not).
    #[arg(long)]
    check_config: bool,
}

/// Exit status for a config that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ayra-cache: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.check_config {
        println!("ayra-cache: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let log_level = telemetry::init(&settings.log);
    // Accepting, signals and reloads; requests are served by the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(workers::BLOCKING_THREAD_NAME)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ayra-cache: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, cli.config, log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "ayra-cache stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, config: PathBuf, log_level: LogLevel) -> std::io::Result<()> {
    // Signals are caught from before the port is bound: one that comes as
    // soon as clients can connect is handled, never the default action
    // (which ends the process). A SIGHUP that early is ignored.
    let shutdown = shutdown_signal()?;
    #[cfg(unix)]
    let early_hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let app = App::build(settings).await?;
    #[cfg(unix)]
    {
        tokio::spawn(reload::on_sighup(app.reloader(Some(log_level)), config));
        drop(early_hangups);
    }
    app.run(shutdown).await
}

/// Listens for SIGTERM and SIGINT from now on; the future completes on the first.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    })
}
