//! The server-wide state shared by every connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Clock;
use crate::conversation_store::ConversationStore;
use crate::rate_limits::RateLimits;
use crate::request_reader::Request;
use crate::response::Body;
use crate::traffic::Traffic;

/// Everything the handlers share.
#[derive(Debug)]
pub struct State {
    /// The stand-in's clock (real time plus skew).
    pub clock: Clock,
    /// The skew given on the command line, restored by a reset.
    initial_skew_ms: i64,
    /// Default lifetime of recording URLs.
    pub recording_ttl: Duration,
    /// Knobs and cached bodies per conversation.
    pub conversations: ConversationStore,
    /// Rate limits and scripted 429s per API key, and when each key called.
    pub rate_limits: RateLimits,
    /// Serial number of the last API response; never reset, so serials stay
    /// unique for the life of the process.
    last_serial: AtomicU64,
    traffic: Mutex<Traffic>,
}

impl State {
    /// Fresh state for a server started with this skew and URL lifetime.
    pub fn new(skew_ms: i64, recording_ttl: Duration) -> Self {
        Self {
            clock: Clock::new(skew_ms),
            initial_skew_ms: skew_ms,
            recording_ttl,
            conversations: ConversationStore::new(),
            rate_limits: RateLimits::new(),
            last_serial: AtomicU64::new(0),
            traffic: Mutex::new(Traffic::default()),
        }
    }

    /// Records an API request (`conversation`: its id on the conversation
    /// route) and returns the serial number of its response.
    pub fn record_api_request(&self, request: &Request, conversation: Option<&str>) -> u64 {
        self.traffic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(request, conversation);
        self.last_serial.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts an API request as in flight until the returned guard is dropped.
    pub fn enter_api_request(self: &Arc<Self>) -> InFlight {
        self.traffic().enter();
        InFlight(Arc::clone(self))
    }

    fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The body of `GET /_standin/stats`.
    pub fn stats(&self) -> Body {
        let traffic = self.traffic.lock().unwrap_or_else(PoisonError::into_inner);
        Body::json(&*traffic)
    }

    /// Back to a freshly started server: knobs, rate limits, counters,
    /// request log and call record, skew (the serial keeps counting).
    pub fn reset(&self) {
        self.conversations.clear_all();
        self.rate_limits.clear();
        self.traffic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.clock.set_skew_ms(self.initial_skew_ms);
    }
}

/// An API request being answered; leaves the count when dropped.
pub struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.traffic().leave();
    }
}
