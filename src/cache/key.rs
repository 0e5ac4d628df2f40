//! The cache key: credential partition, conversation id and the three include flags.

use std::hash::{Hash, Hasher};

use moka::Equivalent;

use crate::domain::{ConversationId, ConversationIdRef, Flags, Partition};

/// Why a query on the cached route cannot be read unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The same flag appears twice.
    RepeatedFlag,
    /// A flag's value is not true/false/1/0.
    UnreadableFlag,
    /// A parameter other than the three flags.
    UnknownParameter,
}

impl BypassReason {
    /// The name used in `cache-status` and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::RepeatedFlag => "repeated_flag",
            BypassReason::UnreadableFlag => "unreadable_flag",
            BypassReason::UnknownParameter => "unknown_parameter",
        }
    }
}

/// Reads the flags from a request's query, or says why the request must bypass the cache.
pub fn read_flags(query: Option<&str>) -> Result<Flags, BypassReason> {
    let mut flags = Flags::default();
    let mut seen = [false; 3];
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (slot, index) = match name.as_ref() {
            "include_transcript" => (&mut flags.transcript, 0),
            "include_recording" => (&mut flags.recording, 1),
            "include_analytics" => (&mut flags.analytics, 2),
            _ => return Err(BypassReason::UnknownParameter),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(BypassReason::RepeatedFlag);
        }
        *slot = read_bool(&value).ok_or(BypassReason::UnreadableFlag)?;
    }
    Ok(flags)
}

fn read_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

/// Everything that tells two cached answers apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub partition: Partition,
    pub id: ConversationId,
    pub flags: Flags,
}

/// Hashed in three writes: one byte for the partition's kind and the flags,
/// the credential's fingerprint when there is one, then the id (the only
/// part of varying length, so last). The derived `Hash` made eight, and
/// every lookup hashes its key.
impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.partition, self.flags, self.id.as_str(), state);
    }
}

/// A key as a lookup sees it: the id borrowed from the request's path, so
/// a HIT makes no key of its own. Hashes and compares as the [`CacheKey`]
/// it stands for.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub partition: Partition,
    pub id: ConversationIdRef<'a>,
    pub flags: Flags,
}

impl KeyRef<'_> {
    /// The key, owned: for a fetch, a refresh or a stored variant.
    pub fn owned(self) -> CacheKey {
        CacheKey {
            partition: self.partition,
            id: self.id.owned(),
            flags: self.flags,
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.partition, self.flags, self.id.as_str(), state);
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.partition == key.partition
            && self.flags == key.flags
            && self.id.as_str() == key.id.as_str()
    }
}

/// The one hash of a key, owned or borrowed.
fn hash_key<H: Hasher>(partition: Partition, flags: Flags, id: &str, state: &mut H) {
    let kind = match partition {
        Partition::Anonymous => 0,
        Partition::Key(_) => 1,
        Partition::Shared => 2,
    };
    let flags = u8::from(flags.transcript)
        | u8::from(flags.recording) << 1
        | u8::from(flags.analytics) << 2;
    state.write_u8(kind << 3 | flags);
    if let Partition::Key(fingerprint) = partition {
        state.write(&fingerprint.digest());
    }
    state.write(id.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Fingerprint;

    fn flags(t: bool, r: bool, a: bool) -> Flags {
        Flags {
            transcript: t,
            recording: r,
            analytics: a,
        }
    }

    fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key)
    }

    /// A lookup by a borrowed key finds exactly the entry of the key it stands for.
    #[test]
    fn a_borrowed_key_hashes_and_compares_as_the_key_it_stands_for() {
        let partitions = [
            Partition::Key(Fingerprint::of(b"Bearer a")),
            Partition::Key(Fingerprint::of(b"Bearer b")),
            Partition::Shared,
            Partition::Anonymous,
        ];
        let all_flags = [
            flags(true, true, true),
            flags(false, true, true),
            flags(true, true, false),
        ];
        let ids = ["conv_1", "conv_2"];
        let mut keys = Vec::new();
        for partition in partitions {
            for flags in all_flags {
                for id in ids {
                    let id = ConversationIdRef::parse(id).unwrap();
                    keys.push(KeyRef {
                        partition,
                        id,
                        flags,
                    });
                }
            }
        }
        for &borrowed in &keys {
            for owned in keys.iter().map(|key| key.owned()) {
                let same = borrowed.owned() == owned;
                assert_eq!(
                    borrowed.equivalent(&owned),
                    same,
                    "{borrowed:?} / {owned:?}"
                );
                if same {
                    assert_eq!(hash_of(&borrowed), hash_of(&owned), "{borrowed:?}");
                }
            }
        }
    }

    #[test]
    fn every_part_of_the_key_is_hashed() {
        let id = |raw| ConversationId::parse(raw).unwrap();
        let base = CacheKey {
            partition: Partition::Key(Fingerprint::of(b"Bearer a")),
            id: id("conv_1"),
            flags: Flags::default(),
        };
        assert_eq!(hash_of(&base), hash_of(&base.clone()));
        let others = [
            CacheKey {
                partition: Partition::Key(Fingerprint::of(b"Bearer b")),
                ..base.clone()
            },
            CacheKey {
                partition: Partition::Shared,
                ..base.clone()
            },
            CacheKey {
                partition: Partition::Anonymous,
                ..base.clone()
            },
            CacheKey {
                id: id("conv_2"),
                ..base.clone()
            },
            CacheKey {
                flags: flags(false, true, true),
                ..base.clone()
            },
            CacheKey {
                flags: flags(true, false, true),
                ..base.clone()
            },
            CacheKey {
                flags: flags(true, true, false),
                ..base.clone()
            },
        ];
        for other in &others {
            assert_ne!(hash_of(&base), hash_of(other), "{other:?}");
        }
    }

    #[test]
    fn absent_flags_are_true() {
        assert_eq!(read_flags(None), Ok(Flags::default()));
        assert_eq!(read_flags(Some("")), Ok(Flags::default()));
    }

    #[test]
    fn flags_read_in_any_case_and_order() {
        let a = read_flags(Some("include_transcript=FALSE&include_analytics=0"));
        let b = read_flags(Some("include_analytics=false&include_transcript=False"));
        assert_eq!(a, Ok(flags(false, true, false)));
        assert_eq!(a, b);
        assert_eq!(
            read_flags(Some("include_recording=1&include_transcript=TrUe")),
            Ok(Flags::default())
        );
    }

    #[test]
    fn spelled_out_defaults_share_the_key_of_no_query() {
        let written = read_flags(Some(&Flags::default().upstream_query()));
        assert_eq!(written, read_flags(None));
    }

    #[test]
    fn ambiguous_queries_bypass() {
        use BypassReason::*;
        let cases = [
            (
                "include_transcript=true&include_transcript=false",
                RepeatedFlag,
            ),
            (
                "include_transcript=true&include_transcript=true",
                RepeatedFlag,
            ),
            ("include_transcript=yes", UnreadableFlag),
            ("include_transcript=", UnreadableFlag),
            ("include_transcript", UnreadableFlag),
            ("include_recording=2", UnreadableFlag),
            ("page=2", UnknownParameter),
            ("include_transcript=true&x=1", UnknownParameter),
            ("INCLUDE_TRANSCRIPT=true", UnknownParameter),
        ];
        for (query, reason) in cases {
            assert_eq!(read_flags(Some(query)), Err(reason), "{query}");
        }
    }

    #[test]
    fn keys_differ_by_partition_id_and_flags() {
        let id = ConversationId::parse("conv_1").unwrap();
        let key = |partition, flags| CacheKey {
            partition,
            id: id.clone(),
            flags,
        };
        let a = Partition::Key(Fingerprint::of(b"Bearer a"));
        let b = Partition::Key(Fingerprint::of(b"Bearer b"));
        assert_ne!(key(a, Flags::default()), key(b, Flags::default()));
        assert_ne!(
            key(a, Flags::default()),
            key(Partition::Anonymous, Flags::default())
        );
        assert_ne!(key(a, Flags::default()), key(a, flags(true, false, true)));
        assert_eq!(key(a, Flags::default()), key(a, Flags::default()));
    }
}
