//! A serialised conversation body with holes for the values that change with every response.
//!
//! The document is serialised once with marker strings where the serial and
//! the recording expiry go; the markers carry a per-process random nonce, so
//! no id or knob can forge one. Rendering a response then only copies the
//! literal pieces (reference-counted) and formats the few changing values.

use std::sync::LazyLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::response::Body;

/// A value that differs between responses for the same conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `data.integrations.standin_serial`, a JSON number.
    Serial,
    /// The `Expires=` unix seconds in the recording URL.
    UrlExpires,
    /// The `X-Signature=` in the recording URL.
    UrlSignature,
    /// `recording.expires_at`, RFC 3339, inside its quotes.
    ExpiresAt,
}

impl Slot {
    const ALL: [Slot; 4] = [
        Slot::Serial,
        Slot::UrlExpires,
        Slot::UrlSignature,
        Slot::ExpiresAt,
    ];

    /// The fewest bytes this slot renders to.
    fn min_len(self) -> usize {
        match self {
            Slot::Serial | Slot::UrlExpires => 1,
            Slot::UrlSignature => SIGNATURE_HEX_LEN,
            Slot::ExpiresAt => "2025-01-01T00:00:00Z".len(),
        }
    }
}

const SIGNATURE_HEX_LEN: usize = 32;

static NONCE: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// The string to place in the document where `slot` goes. The serial's
/// marker stands for a whole JSON string (its quotes are replaced too).
pub fn marker(slot: Slot) -> String {
    let name = match slot {
        Slot::Serial => "serial",
        Slot::UrlExpires => "url-expires",
        Slot::UrlSignature => "url-signature",
        Slot::ExpiresAt => "expires-at",
    };
    format!("@standin-{}-{name}@", *NONCE)
}

/// The text searched for in the serialised document.
fn serialised_marker(slot: Slot) -> String {
    match slot {
        Slot::Serial => format!("\"{}\"", marker(slot)),
        _ => marker(slot),
    }
}

#[derive(Debug)]
enum Piece {
    Literal(Bytes),
    Slot(Slot),
}

/// A body split into literal bytes and [`Slot`]s.
#[derive(Debug)]
pub struct BodyTemplate {
    pieces: Vec<Piece>,
    min_len: usize,
}

impl BodyTemplate {
    /// Splits a serialised document at its markers.
    pub fn from_serialised(text: String) -> Self {
        let mut holes: Vec<(usize, usize, Slot)> = Slot::ALL
            .iter()
            .flat_map(|&slot| {
                let needle = serialised_marker(slot);
                text.match_indices(&needle)
                    .map(move |(at, found)| (at, found.len(), slot))
                    .collect::<Vec<_>>()
            })
            .collect();
        holes.sort_unstable_by_key(|&(at, _, _)| at);

        let text_len = text.len();
        let all = Bytes::from(text);
        let mut pieces = Vec::with_capacity(holes.len() * 2 + 1);
        let mut min_len = 0;
        let mut cursor = 0;
        for (at, len, slot) in holes {
            pieces.push(Piece::Literal(all.slice(cursor..at)));
            pieces.push(Piece::Slot(slot));
            min_len += at - cursor + slot.min_len();
            cursor = at + len;
        }
        pieces.push(Piece::Literal(all.slice(cursor..)));
        min_len += text_len - cursor;
        Self { pieces, min_len }
    }

    /// The fewest bytes a rendered body can have.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// The body of one response.
    pub fn render(&self, values: &SlotValues) -> Body {
        let segments = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(bytes) => bytes.clone(),
                Piece::Slot(slot) => Bytes::from(values.text(*slot)),
            })
            .collect();
        Body::from_segments(segments)
    }
}

/// The values of one response's slots.
#[derive(Debug)]
pub struct SlotValues {
    serial: u64,
    expires_unix: i64,
    signature: String,
    expires_at: String,
}

impl SlotValues {
    /// Values for conversation `id`, response `serial`, URL dying at `expires_unix`.
    pub fn new(id: &str, serial: u64, expires_unix: i64) -> Self {
        let digest = Sha256::digest(format!("ayra-standin:{id}:{expires_unix}"));
        let mut signature = hex::encode(digest);
        signature.truncate(SIGNATURE_HEX_LEN);
        let expires_at = jiff::Timestamp::from_second(expires_unix)
            .unwrap_or(if expires_unix > 0 {
                jiff::Timestamp::MAX
            } else {
                jiff::Timestamp::MIN
            })
            .to_string();
        Self {
            serial,
            expires_unix,
            signature,
            expires_at,
        }
    }

    fn text(&self, slot: Slot) -> String {
        match slot {
            Slot::Serial => self.serial.to_string(),
            Slot::UrlExpires => self.expires_unix.to_string(),
            Slot::UrlSignature => self.signature.clone(),
            Slot::ExpiresAt => self.expires_at.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_filled_in_place() {
        let text = format!(
            r#"{{"url":"u?s={}&e={}","expires_at":"{}","serial":"{}"}}"#,
            marker(Slot::UrlSignature),
            marker(Slot::UrlExpires),
            marker(Slot::ExpiresAt),
            marker(Slot::Serial)
        );
        let template = BodyTemplate::from_serialised(text);
        let body = template.render(&SlotValues::new("conv_1", 42, 1_700_000_000));
        let json: serde_json::Value =
            serde_json::from_slice(&body.to_vec()).expect("rendered body is JSON");
        assert_eq!(json["serial"], 42);
        assert_eq!(json["expires_at"], "2023-11-14T22:13:20Z");
        let url = json["url"].as_str().expect("url is a string");
        assert!(url.ends_with("&e=1700000000"), "{url}");
        assert!(template.min_len() <= body.len());
    }

    #[test]
    fn text_without_markers_is_one_literal() {
        let template = BodyTemplate::from_serialised("{\"a\":1}".to_owned());
        let body = template.render(&SlotValues::new("x", 1, 0));
        assert_eq!(body.to_vec(), b"{\"a\":1}");
        assert_eq!(template.min_len(), 7);
    }
}
