//! ayra-cache: a caching reverse proxy for the Ayra conversations API.
//!
//! Internal apps point their base URL here. Conversation reads are served
//! from memory when a completed answer is held, and fetched once per key
//! otherwise; every entry is dropped before the pre-signed recording URL in
//! it dies. Everything else under `/v1/` is forwarded untouched.
//!
//! The modules, in the order a request meets them:
//!
//! - [`app`]: the composition root: builds the parts, wires them to the server, owns shutdown.
//! - [`config`]: the TOML file and environment, validated into [`config::Settings`].
//! - [`certificate`]: TLS certificate pairs, parsed once per load.
//! - [`telemetry`]: the log subscriber, and its level changed at run time.
//! - [`access_log`]: the one access event per request.
//! - [`server`]: the transport: listeners, worker threads, connection limits and timeouts, drain.
//! - [`handler`]: `handle` (log once, errors to responses) around `route`.
//! - [`route`]: which route a path takes.
//! - [`domain`]: the conversation id, include flags and cache partition every layer may use.
//! - [`state`]: what every request shares (live settings, client, cache, metrics).
//! - [`live`]: the settings a reload can change, read once per request.
//! - [`auth`]: the request's credential and cache partition.
//! - [`conversation`]: the cached route: key, lookup, shared fetch, response.
//! - [`cache`]: key, policy, entries, coalescing, storage, `cache-status`.
//! - [`body`]: the body every answer is sent with (one or two shared buffers).
//! - [`passthrough`]: forwarding everything else under `/v1/`.
//! - [`budget`]: the API key's budget: upstream calls paced per credential, clients taking
//!   turns (its core; wired into the fetch path next).
//! - [`upstream`]: the client pool and bounded upstream exchanges.
//! - [`hop_by_hop`]: the headers that never cross the proxy.
//! - [`admin`]: the operators' listener: metrics, stats, purges.
//! - [`summary`]: the periodic summary log event.
//! - [`reload`]: SIGHUP: the reloadable keys of a new config, applied at once.
//! - [`trace_context`]: the client's request id and W3C trace context, checked and continued.
//! - [`error`]: the proxy's errors and their one status mapping.
//! - [`metrics`]: the Prometheus metrics every part counts into.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod app;
pub mod auth;
pub(crate) mod body;
pub mod budget;
pub mod cache;
pub(crate) mod certificate;
pub mod config;
pub(crate) mod conversation;
pub(crate) mod conversation_fetch;
pub mod domain;
pub mod error;
pub(crate) mod handler;
pub(crate) mod hop_by_hop;
pub(crate) mod live;
pub mod metrics;
pub(crate) mod passthrough;
pub mod reload;
pub mod route;
pub mod server;
pub(crate) mod spending;
pub(crate) mod state;
pub(crate) mod summary;
pub mod telemetry;
pub mod trace_context;
pub mod upstream;

pub use app::App;
