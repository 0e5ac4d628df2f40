//! Where things live in Redis: value, claim and index keys, the notice channel, and the upstream budgets.
//!
//! Every key of a conversation carries its id as the Redis Cluster hash tag
//! (`{id}`), so its values, claims and index share one slot and one script
//! can touch them together. Keys hold the credential's fingerprint, never
//! the credential, and the record format, so replicas of different versions
//! never read each other's values.

use std::fmt::Write;

use super::super::key::CacheKey;
use super::super::record::FORMAT;
use crate::domain::{ConversationId, Partition};

/// The key names under one `shared.key_prefix`.
#[derive(Debug, Clone)]
pub struct Names {
    /// `{key_prefix}v{FORMAT}:`
    root: String,
}

impl Names {
    pub fn new(key_prefix: &str) -> Names {
        Names {
            root: format!("{key_prefix}v{FORMAT}:"),
        }
    }

    /// `{root}{<id>}:<partition>:<flags>`: one stored answer.
    pub fn value(&self, key: &CacheKey) -> String {
        let mut name = self.conversation(&key.id);
        name.push(':');
        match key.partition {
            Partition::Anonymous => name.push_str("anon"),
            Partition::Shared => name.push_str("proxy"),
            Partition::Key(fingerprint) => {
                name.push('k');
                name.push_str(&hex::encode(fingerprint.digest()));
            }
        }
        let bit = |on: bool| if on { '1' } else { '0' };
        let flags = key.flags;
        let _ = write!(
            name,
            ":{}{}{}",
            bit(flags.transcript),
            bit(flags.recording),
            bit(flags.analytics)
        );
        name
    }

    /// The claim on fetching the value named `value`.
    pub fn claim(&self, value: &str) -> String {
        format!("{value}:claim")
    }

    /// The set of a conversation's value names (what a purge deletes).
    pub fn index(&self, id: &ConversationId) -> String {
        let mut name = self.conversation(id);
        name.push_str(":index");
        name
    }

    /// The sorted set of conversations with values, scored by when their last
    /// value expires (what a purge of everything walks).
    pub fn conversations(&self) -> String {
        format!("{}conversations", self.root)
    }

    /// The pub/sub channel of notices between replicas.
    pub fn channel(&self) -> String {
        format!("{}notices", self.root)
    }

    /// An upstream credential's shared budget (`credential`: its
    /// fingerprint in hex, or `anon`): the bucket's theoretical arrival time
    /// and the pause of an upstream `429`, in one hash slot so one script
    /// reads both.
    pub fn budget(&self, credential: &str) -> (String, String) {
        let tag = format!("{}{{budget:{credential}}}", self.root);
        (format!("{tag}:gcra"), format!("{tag}:pause"))
    }

    fn conversation(&self, id: &ConversationId) -> String {
        format!("{}{{{}}}", self.root, id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fingerprint, Flags};

    fn key(partition: Partition, flags: Flags) -> CacheKey {
        CacheKey {
            partition,
            id: ConversationId::parse("conv_1").unwrap(),
            flags,
        }
    }

    /// The part Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(name: &str) -> &str {
        let open = name.find('{').unwrap();
        let close = open + name[open..].find('}').unwrap();
        &name[open + 1..close]
    }

    #[test]
    fn a_conversation_keeps_one_slot() {
        let names = Names::new("ayra-cache:");
        let value = names.value(&key(Partition::Anonymous, Flags::default()));
        assert_eq!(value, "ayra-cache:v1:{conv_1}:anon:111");
        for name in [
            &value,
            &names.claim(&value),
            &names.index(&key(Partition::Shared, Flags::default()).id),
        ] {
            assert_eq!(hash_tag(name), "conv_1");
        }
    }

    #[test]
    fn a_budgets_bucket_and_pause_share_a_slot_apart_from_conversations() {
        let names = Names::new("p:");
        let (bucket, pause) = names.budget("ab12");
        assert_eq!(bucket, "p:v1:{budget:ab12}:gcra");
        assert_eq!(hash_tag(&bucket), hash_tag(&pause));
        assert_ne!(bucket, pause);
    }

    #[test]
    fn credentials_and_flags_tell_values_apart_without_the_credential() {
        let names = Names::new("p:");
        let fingerprint = Fingerprint::of(b"Bearer sk_live_secret");
        let with_key = names.value(&key(Partition::Key(fingerprint), Flags::default()));
        assert!(!with_key.contains("sk_live_secret"));
        assert!(with_key.contains(&hex::encode(fingerprint.digest())));
        let other = Fingerprint::of(b"Bearer sk_live_other");
        assert_ne!(
            with_key,
            names.value(&key(Partition::Key(other), Flags::default()))
        );
        let no_transcript = Flags {
            transcript: false,
            ..Flags::default()
        };
        assert!(names
            .value(&key(Partition::Shared, no_transcript))
            .ends_with(":proxy:011"));
    }
}
