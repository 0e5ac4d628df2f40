//! The record of API requests served: counters and the most recent requests.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::request_reader::Request;

/// How many recent API requests are kept.
const RECENT_REQUESTS: usize = 200;

/// One API request as the stand-in received it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    /// Its `x-request-id` and `traceparent` (the first of each), as the log
    /// line shows them: what joins this record to the caller's logs.
    request_id: Option<String>,
    traceparent: Option<String>,
}

/// Counters and recent requests; serialises as the body of `GET /_standin/stats`.
#[derive(Debug, Default, Serialize)]
pub struct Traffic {
    requests_total: u64,
    conversation_requests: HashMap<String, u64>,
    requests: VecDeque<SeenRequest>,
    /// API requests being answered right now.
    in_flight: u64,
    /// The most API requests ever answered at once (since the last reset).
    max_in_flight: u64,
}

impl Traffic {
    /// Counts an API request; `conversation` is its id on the conversation route.
    pub fn record(&mut self, request: &Request, conversation: Option<&str>) {
        self.requests_total += 1;
        if let Some(id) = conversation {
            match self.conversation_requests.get_mut(id) {
                Some(count) => *count += 1,
                None => {
                    self.conversation_requests.insert(id.to_owned(), 1);
                }
            }
        }
        if self.requests.len() == RECENT_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(SeenRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            request_id: request.header("x-request-id").map(str::to_owned),
            traceparent: request.header("traceparent").map(str::to_owned),
        });
    }

    /// An API request started being answered.
    pub fn enter(&mut self) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    /// An API request's answer was written (or abandoned).
    pub fn leave(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Forgets everything but the requests being answered now.
    pub fn clear(&mut self) {
        *self = Self {
            in_flight: self.in_flight,
            ..Self::default()
        };
    }
}
