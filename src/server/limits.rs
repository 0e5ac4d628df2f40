//! The limits every client connection is held to: its time limits and its HTTP/2 streams.

use std::time::Duration;

use crate::config::ServerSettings;

/// The per-connection time limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

impl From<&ServerSettings> for ConnectionLimits {
    fn from(server: &ServerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            h2_max_concurrent_streams: server.h2_max_concurrent_streams,
        }
    }
}
