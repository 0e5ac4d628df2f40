//! What bench/run's two tools share, and the open-loop client's pure parts.
//!
//! `ayra-ceiling` (the per-core hyper server a HIT can at best be) fetches
//! each body from the upstream with [`response`] at start; `ayra-paced` (the
//! open-loop client) reads every answer with it, takes its send times from
//! [`schedule`] and summarises with [`latency`].

pub mod latency;
pub mod response;
pub mod schedule;
