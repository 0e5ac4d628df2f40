//! The domain's own types, which every layer may use: a conversation id, the include flags, whose answers a request reads, the content codings.
//!
//! A leaf: nothing here imports another module of this crate, so the route,
//! the credentials, the cache and the upstream client can all speak of the
//! same id, flags and partition without knowing one another.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A conversation id known to match `[A-Za-z0-9_-]{1,128}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(Arc<str>);

/// A conversation id that is not `[A-Za-z0-9_-]{1,128}` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid conversation id")]
pub struct InvalidConversationId;

impl ConversationId {
    /// Checks the id as it appears in the path: no decoding, so `%2F`, dots
    /// and slashes are all refused.
    pub fn parse(raw: &str) -> Result<ConversationId, InvalidConversationId> {
        ConversationIdRef::parse(raw).map(ConversationIdRef::owned)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which bytes an id may hold, `A-Z a-z 0-9 _ -`, by value: one load per
/// byte (every request's id is checked; the comparisons cost three times as
/// many instructions, measured).
const ID_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        allowed[byte] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        byte += 1;
    }
    allowed
};

/// A conversation id checked where it lies, in the request's path: what a
/// lookup needs, without the allocation an owned [`ConversationId`] costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationIdRef<'a>(&'a str);

impl<'a> ConversationIdRef<'a> {
    /// Checks the id as [`ConversationId::parse`] does.
    pub fn parse(raw: &'a str) -> Result<ConversationIdRef<'a>, InvalidConversationId> {
        let valid = (1..=128).contains(&raw.len()) && raw.bytes().all(|b| ID_BYTES[usize::from(b)]);
        if valid {
            Ok(ConversationIdRef(raw))
        } else {
            Err(InvalidConversationId)
        }
    }

    /// The id as text.
    pub fn as_str(self) -> &'a str {
        self.0
    }

    /// The id, owned: for a key that is stored or outlives the request.
    pub fn owned(self) -> ConversationId {
        ConversationId(Arc::from(self.0))
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three `include_*` query flags, each `true` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags {
    pub transcript: bool,
    pub recording: bool,
    pub analytics: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            transcript: true,
            recording: true,
            analytics: true,
        }
    }
}

impl Flags {
    /// The query the proxy sends upstream: every flag written out.
    pub fn upstream_query(&self) -> String {
        format!(
            "include_transcript={}&include_recording={}&include_analytics={}",
            self.transcript, self.recording, self.analytics
        )
    }
}

/// A SHA-256 digest of a credential; the only form of it the cache keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of these bytes.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(bytes).into())
    }

    /// The digest itself (for the snapshot file; never the credential).
    pub fn digest(&self) -> [u8; 32] {
        self.0
    }

    /// A fingerprint from a configured SHA-256 digest.
    pub fn from_digest(digest: [u8; 32]) -> Fingerprint {
        Fingerprint(digest)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({}..)", hex::encode(&self.0[..4]))
    }
}

/// Whose cached answers a request may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Pass-through mode, a request without `Authorization`.
    Anonymous,
    /// Pass-through mode, one client credential.
    Key(Fingerprint),
    /// Proxy-held key: every client reads the same answers.
    Shared,
}

/// A content coding the proxy can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Br,
    Gzip,
    Zstd,
}

impl Encoding {
    /// Every coding, for config validation.
    pub const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Gzip, Encoding::Zstd];

    /// The token in `Accept-Encoding` and `content-encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL
            .into_iter()
            .find(|encoding| name.eq_ignore_ascii_case(encoding.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_as_written() {
        for good in ["conv_abc123xyz789", "a", "A-Z_0-9", &"x".repeat(128)] {
            assert!(ConversationId::parse(good).is_ok(), "{good}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            "a/b",
            "a.b",
            "..",
            "a%2Fb",
            "a%41",
            "é",
            "a b",
            "a+b",
            long.as_str(),
        ] {
            assert_eq!(
                ConversationId::parse(bad),
                Err(InvalidConversationId),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_id_may_hold_exactly_letters_digits_underscores_and_hyphens() {
        for byte in 0..=u8::MAX {
            let allowed = matches!(byte, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-');
            assert_eq!(ID_BYTES[usize::from(byte)], allowed, "byte {byte}");
            if byte.is_ascii() {
                let id = format!("conv{}", char::from(byte));
                assert_eq!(ConversationId::parse(&id).is_ok(), allowed, "{id:?}");
            }
        }
    }

    #[test]
    fn every_flag_is_written_out_upstream() {
        let flags = Flags {
            recording: false,
            ..Flags::default()
        };
        assert_eq!(
            flags.upstream_query(),
            "include_transcript=true&include_recording=false&include_analytics=true"
        );
    }

    #[test]
    fn fingerprints_do_not_show_the_credential() {
        let printed = format!("{:?}", Fingerprint::of(b"Bearer sk_live_secret"));
        assert!(!printed.contains("sk_live"));
    }
}
