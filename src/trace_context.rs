//! Request ids and W3C trace context: what a client sent, checked, and what the upstream call carries.
//!
//! SPEC section 13. A well-formed `x-request-id` is kept; a valid
//! `traceparent` (W3C Trace Context, version `00`) is continued with a span id
//! of the proxy's own; `tracestate` travels unchanged when it is short enough.
//! Anything malformed is ignored, never an error.
//!
//! No crate is used for the `traceparent` check: the maintained propagators
//! (OpenTelemetry's) accept future versions and extra fields and allocate,
//! while this contract takes version `00` only, lowercase hex only, and must
//! not allocate on the request path. The header is a fixed 55-byte layout, so
//! the check is a bounded scan of those bytes; hex decoding is the `hex`
//! crate's.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest request id kept.
const MAX_REQUEST_ID: usize = 128;
/// The longest `tracestate` forwarded; a longer one is dropped.
pub const MAX_TRACESTATE: usize = 512;
/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
const TRACEPARENT_LEN: usize = 55;

/// The client's `x-request-id`, when there is exactly one and it is 1 to 128
/// characters of `A-Z a-z 0-9 - _ . : /`. The value is shared, not copied.
pub fn client_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let well_formed = (1..=MAX_REQUEST_ID).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
    well_formed.then_some(value)
}

/// A valid W3C `traceparent`: the trace, the span that called us, its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// The request's `traceparent`, when there is exactly one and it is valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(value.as_bytes())
    }

    /// Reads version `00` exactly: 55 bytes (around them, optional spaces and
    /// tabs), lowercase hex fields, neither id all zeros. Any other form,
    /// future versions included (SPEC section 13 takes `00` only), is `None`.
    pub fn parse(text: &[u8]) -> Option<TraceParent> {
        let text = text.trim_ascii();
        if text.len() != TRACEPARENT_LEN
            || !text.starts_with(b"00-")
            || text[35] != b'-'
            || text[52] != b'-'
        {
            return None;
        }
        let mut parsed = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        let mut flags = [0u8; 1];
        lower_hex(&text[3..35], &mut parsed.trace_id)?;
        lower_hex(&text[36..52], &mut parsed.parent_id)?;
        lower_hex(&text[53..55], &mut flags)?;
        parsed.flags = flags[0];
        let zero = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
        if zero(&parsed.trace_id) || zero(&parsed.parent_id) {
            return None;
        }
        Some(parsed)
    }

    /// The context an upstream call made for this request carries: the same
    /// trace and flags, with `span_id` (the proxy's hop) as its parent.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent {
            parent_id: span_id,
            ..*self
        }
    }

    /// The header text, `00-{trace}-{parent}-{flags}`.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut text = [0u8; TRACEPARENT_LEN];
        text[..3].copy_from_slice(b"00-");
        encode(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        encode(&self.parent_id, &mut text[36..52]);
        text[52] = b'-';
        encode(&[self.flags], &mut text[53..55]);
        HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
    }

    /// The trace it belongs to.
    pub fn trace(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The trace id as 32 lowercase hex digits, without allocating.
    pub fn trace_id_hex(&self) -> HexId<32> {
        HexId::of(&self.trace_id)
    }

    /// The parent id as 16 lowercase hex digits, without allocating.
    pub fn parent_id_hex(&self) -> HexId<16> {
        HexId::of(&self.parent_id)
    }
}

/// A trace's id: what the log lines of every service on one trace share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// As 32 lowercase hex digits, without allocating.
    pub fn hex(&self) -> HexId<32> {
        HexId::of(&self.0)
    }
}

/// A request's own ids: its request id (the client's when well formed,
/// else one generated) and the trace context it came with, when valid.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: HeaderValue,
    pub trace: Option<TraceParent>,
}

impl RequestIds {
    /// Reads a request's ids, allocating nothing but a generated id (as
    /// before the client's were read at all). Which of the two names the
    /// request has is found in one pass over its field names, comparing
    /// them without hashing (a request with neither costs a comparison or
    /// two per field: at most 100, the head's limit); a name that is there
    /// is then looked up.
    pub fn of(headers: &HeaderMap) -> RequestIds {
        let (mut has_request_id, mut has_traceparent) = (false, false);
        for name in headers.keys() {
            has_request_id |= *name == X_REQUEST_ID;
            has_traceparent |= *name == TRACEPARENT;
        }
        let request_id = has_request_id.then(|| client_request_id(headers)).flatten();
        RequestIds {
            request_id: request_id.cloned().unwrap_or_else(generated_request_id),
            trace: has_traceparent
                .then(|| TraceParent::from_headers(headers))
                .flatten(),
        }
    }

    /// What an upstream call made for this request carries; `headers` are
    /// the request's, whose `tracestate` is read only with a valid trace.
    pub fn upstream(&self, headers: &HeaderMap) -> UpstreamIds {
        UpstreamIds {
            request_id: self.request_id.clone(),
            trace: self.trace.map(|parent| ContinuedTrace {
                parent,
                state: tracestate(headers),
            }),
        }
    }
}

/// A generated request id: the 32 hex digits of a random (version 4) UUID.
/// Its bits come from the thread's `fastrand` generator: an id must be
/// unique, not secret, and a cryptographic generator costs a HIT more.
///
/// Written by `hex`'s table: uuid's own formatting cost a HIT about twice
/// the instructions (every request without an id of its own makes one).
pub fn generated_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut digits = [0u8; 32];
    match hex::encode_to_slice(id.as_bytes(), &mut digits) {
        Ok(()) => {
            HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// What an upstream call made for a request carries of it: the request id,
/// and the trace continued (never anything the cache stores or keys on).
#[derive(Debug, Clone)]
pub struct UpstreamIds {
    request_id: HeaderValue,
    trace: Option<ContinuedTrace>,
}

/// The trace a request came with, to continue upstream.
#[derive(Debug, Clone)]
struct ContinuedTrace {
    parent: TraceParent,
    /// Its `tracestate`, when usable: travels only with the trace.
    state: Option<HeaderValue>,
}

impl UpstreamIds {
    /// Writes the ids into an upstream request's headers, replacing any
    /// already there (on pass-through, the client's own): `x-request-id`
    /// and, with a trace, its `traceparent` with a new span id of the
    /// proxy's and its `tracestate`. Each call is a new span.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        let Some(trace) = &self.trace else {
            return;
        };
        let continued = trace.parent.child(new_span_id());
        headers.insert(&TRACEPARENT, continued.to_header_value());
        if let Some(state) = &trace.state {
            headers.insert(&TRACESTATE, state.clone());
        }
    }
}

/// A new span id for an upstream call: 8 random bytes, never all zeros.
pub fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// The request's `tracestate`, to forward unchanged: one field, or several
/// joined with `,` (RFC 9110 field combination; empty ones left out), when
/// the result is 1 to [`MAX_TRACESTATE`] bytes.
pub fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        let usable = (1..=MAX_TRACESTATE).contains(&first.as_bytes().trim_ascii().len())
            && first.len() <= MAX_TRACESTATE;
        return usable.then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(MAX_TRACESTATE);
    let members = [first, second].into_iter().chain(values);
    for value in members.filter(|value| !value.as_bytes().trim_ascii().is_empty()) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// An id written as lowercase hex on the stack.
#[derive(Clone, Copy)]
pub struct HexId<const N: usize>([u8; N]);

impl<const N: usize> HexId<N> {
    fn of(bytes: &[u8]) -> HexId<N> {
        let mut text = [0u8; N];
        encode(bytes, &mut text);
        HexId(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl<const N: usize> std::fmt::Display for HexId<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> std::fmt::Debug for HexId<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes `text` into `out` when every digit is lowercase hex.
fn lower_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if !text.iter().all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode_to_slice(text, out).ok()
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    hex::encode_to_slice(bytes, out).expect("the output holds two digits per byte");
}

#[cfg(test)]
#[path = "trace_context/tests.rs"]
mod tests;
