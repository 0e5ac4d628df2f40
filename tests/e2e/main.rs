//! End-to-end tests: the proxy on port 0 in front of the stand-in Ayra API, over real HTTP.

mod app;
mod raw;
mod standin;

mod admin;
mod binary;
mod cached_route;
mod coalescing;
mod credentials;
mod faults;
mod limits;
mod routes;
mod standin_smoke;
mod storing;
