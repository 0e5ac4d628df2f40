//! Per-conversation knobs: how the stand-in answers for one conversation id.

use std::time::Duration;

use serde::Deserialize;

/// Largest `body_bytes` accepted, so a typo cannot exhaust memory.
const MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;
/// Longest `recording_ttl_ms` accepted (ten years), so expiry stays a real date.
const MAX_RECORDING_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Default pause between bytes of a `trickle` fault.
const DEFAULT_TRICKLE_MS: u64 = 50;

/// The knobs of one conversation, as set by `PUT /_standin/conversations/{id}`.
/// Every field is optional; a missing field has its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// `false`: 404 `conversation_not_found`.
    pub exists: bool,
    /// `data.status`.
    pub status: String,
    /// `false`: `"recording": null`.
    pub recording: bool,
    /// Lifetime of this conversation's recording URL (else the server default).
    pub recording_ttl_ms: Option<u64>,
    /// Written verbatim as `recording.expires_at`.
    pub expires_at: Option<String>,
    /// `true`: `"analytics": null`.
    pub analytics_pending: bool,
    /// Pause before the response head.
    pub delay_ms: Option<u64>,
    /// Answer this status (400..=599) with the API's error shape.
    pub fail_status: Option<u16>,
    /// Bearer tokens that get 403 `insufficient_permissions`.
    pub forbidden_tokens: Vec<String>,
    /// Sent as a `cache-control` header.
    pub cache_control: Option<String>,
    /// Sent as an `age` header.
    pub age: Option<u64>,
    /// `true`: no `date` header.
    pub omit_date: bool,
    /// Sent as given, after the stand-in's own headers.
    pub extra_headers: Vec<(String, String)>,
    /// Pad the transcript until the body has at least this many bytes.
    pub body_bytes: Option<u64>,
    /// A way to misbehave on the wire.
    pub fault: Option<Fault>,
    /// Pause between bytes of the `trickle` fault (default 50 ms).
    pub trickle_ms: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            exists: true,
            status: "completed".to_owned(),
            recording: true,
            recording_ttl_ms: None,
            expires_at: None,
            analytics_pending: false,
            delay_ms: None,
            fail_status: None,
            forbidden_tokens: Vec::new(),
            cache_control: None,
            age: None,
            omit_date: false,
            extra_headers: Vec::new(),
            body_bytes: None,
            fault: None,
            trickle_ms: None,
        }
    }
}

/// How an answer goes wrong on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 200, JSON content type, right length, body cut in half (not JSON).
    MalformedBody,
    /// A garbage status line, then close.
    MalformedHead,
    /// A valid status line, then a header line without a colon, then close.
    BadHeader,
    /// The full `content-length`, half the body, then close.
    DropMidBody,
    /// `content-length` 100 bytes more than the body, the body, then close.
    ShortBody,
    /// Chunked, a few chunks, then silence until the peer leaves.
    ChunkedNeverEnds,
    /// The body one byte every `trickle_ms`.
    Trickle,
    /// Read the request, close without a byte.
    CloseWithoutResponse,
}

impl Knobs {
    /// Parses and checks a knobs document; the error says what is wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let document: serde_json::Value =
            serde_json::from_slice(body).map_err(|error| format!("Invalid knobs: {error}"))?;
        if !document.is_object() {
            // serde would also read a struct from an array, by position.
            return Err("Knobs must be a JSON object".to_owned());
        }
        let knobs =
            Self::deserialize(document).map_err(|error| format!("Invalid knobs: {error}"))?;
        knobs.validate()?;
        Ok(knobs)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.fail_status {
            if !(400..=599).contains(&status) {
                return Err(format!("fail_status {status} is not in 400..=599"));
            }
        }
        if self.body_bytes.is_some_and(|bytes| bytes > MAX_BODY_BYTES) {
            return Err(format!("body_bytes is over {MAX_BODY_BYTES}"));
        }
        if self
            .recording_ttl_ms
            .is_some_and(|ttl| ttl > MAX_RECORDING_TTL_MS)
        {
            return Err(format!("recording_ttl_ms is over {MAX_RECORDING_TTL_MS}"));
        }
        if let Some(value) = &self.cache_control {
            check_header("cache-control", value)?;
        }
        for (name, value) in &self.extra_headers {
            check_header(name, value)?;
        }
        Ok(())
    }

    /// The recording URL lifetime: this conversation's, else `default`.
    pub fn recording_ttl(&self, default: Duration) -> Duration {
        self.recording_ttl_ms.map_or(default, Duration::from_millis)
    }

    /// The pause before the response head.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.unwrap_or(0))
    }

    /// The pause between bytes of a `trickle` fault.
    pub fn trickle_interval(&self) -> Duration {
        Duration::from_millis(self.trickle_ms.unwrap_or(DEFAULT_TRICKLE_MS))
    }
}

/// A header the stand-in is told to send must not break the response framing.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of {name:?} is not a valid header value"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_defaults() {
        let knobs = Knobs::from_json(b"{}").expect("valid knobs");
        assert!(knobs.exists && knobs.recording && knobs.status == "completed");
    }

    #[test]
    fn unknown_fields_and_faults_are_refused() {
        assert!(Knobs::from_json(br#"{"exist": false}"#).is_err());
        assert!(Knobs::from_json(br#"{"fault": "explode"}"#).is_err());
        assert!(Knobs::from_json(b"[]").is_err());
    }

    #[test]
    fn headers_that_would_break_framing_are_refused() {
        assert!(Knobs::from_json(br#"{"extra_headers": [["x-a", "1\r\nx-b: 2"]]}"#).is_err());
        assert!(Knobs::from_json(br#"{"extra_headers": [["bad name", "1"]]}"#).is_err());
        assert!(Knobs::from_json(br#"{"extra_headers": [["Connection", "close"]]}"#).is_ok());
    }

    #[test]
    fn fault_names_are_snake_case() {
        let knobs = Knobs::from_json(br#"{"fault": "chunked_never_ends"}"#).expect("valid knobs");
        assert_eq!(knobs.fault, Some(Fault::ChunkedNeverEnds));
    }
}
