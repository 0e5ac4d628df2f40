//! `ayra-standin`: a fake Ayra conversations API for tests, demos and benchmarks.
//!
//! It speaks HTTP/1.1 straight on TCP (requests parsed with `httparse`, responses
//! written by hand) so that it can also misbehave in ways a real HTTP library
//! never would: malformed heads, short bodies, dropped connections, endless
//! chunked bodies. Every conversation id exists by default; per-conversation
//! knobs, per-key rate limits, the clock skew and the request log are driven
//! through `/_standin/`.
//!
//! On start it prints exactly one line to stdout,
//! `ayra-standin listening on http://HOST:PORT`, so that a test can bind port 0
//! and learn the port. Logs go to stderr, filtered by `AYRA_STANDIN_LOG`
//! (default `warn`).

mod body_template;
mod call_scripts;
mod clock;
mod connection;
mod control;
mod conversation;
mod conversation_store;
mod document;
mod echo;
mod flags;
mod knobs;
mod rate_limits;
mod request_reader;
mod response;
mod response_writer;
mod router;
mod seeded_rng;
mod state;
mod traffic;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::state::State;

/// Command line of the stand-in.
#[derive(Debug, Parser)]
#[command(
    name = "ayra-standin",
    version,
    about = "A stand-in for the Ayra conversations API"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Milliseconds added to the real time for `Date` and `expires_at` (may be negative).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(-clock::MAX_SKEW_MS..=clock::MAX_SKEW_MS)
    )]
    skew_ms: i64,

    /// Default lifetime of the pre-signed recording URLs, e.g. "1h", "90s".
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    recording_ttl: Duration,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ayra-standin: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter =
        EnvFilter::try_from_env("AYRA_STANDIN_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only for a terminal: a test or a file reads plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let listener = TcpListener::bind(cli.listen).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {}: {error}", cli.listen),
        )
    })?;
    let address = listener.local_addr()?;
    announce(address)?;
    let state = Arc::new(State::new(cli.skew_ms, cli.recording_ttl));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
                }
                tokio::spawn(connection::serve(stream, Arc::clone(&state)));
            }
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Prints the one stdout line that tests wait for, and flushes it.
fn announce(address: SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ayra-standin listening on http://{address}")?;
    stdout.flush()
}
