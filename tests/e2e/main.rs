//! End-to-end tests: the proxy on port 0 in front of the stand-in Ayra API, over real HTTP.

mod app;
mod log_tail;
mod raw;
#[path = "../support/redis_server.rs"]
mod redis;
mod standin;

mod admin;
mod binary;
mod budget;
mod budget_pause;
mod budget_shared;
mod cached_route;
mod coalescing;
mod credentials;
mod deploy_files;
mod faults;
mod fuzz_corpora;
mod hostile;
mod http2;
mod lifetimes;
mod limits;
mod properties;
mod reload;
mod representations;
mod request_framing;
mod restarts;
mod routes;
mod shared;
mod standin_smoke;
mod storing;
mod tls;
mod trace_context;
mod trace_logs;
mod trace_sharing;
