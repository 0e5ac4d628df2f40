//! Which keys each conversation has in the store, so purging one conversation visits its own entries only.
//!
//! The store tells the index every time a key comes to hold an entry (in the
//! same step as the insert) and every time an entry leaves (moka's eviction
//! listener, whatever the cause: lifetime, size, removal, replacement). An
//! entry leaving forgets its key only if the key still holds that very
//! entry: when a newer one took its place first, the key stays listed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::entry::CachedResponse;
use super::key::CacheKey;
use crate::domain::{ConversationId, Flags, Partition};

/// One key of a conversation, and the entry it holds.
struct Listed {
    partition: Partition,
    flags: Flags,
    /// The address of the entry held: which entry, never dereferenced.
    entry: usize,
}

impl Listed {
    fn is(&self, key: &CacheKey) -> bool {
        self.partition == key.partition && self.flags == key.flags
    }
}

/// The keys the store holds, by conversation.
#[derive(Default)]
pub(super) struct IdIndex {
    by_id: Mutex<HashMap<ConversationId, Vec<Listed>>>,
}

impl IdIndex {
    /// `key` now holds `entry`.
    pub fn held(&self, key: &CacheKey, entry: &Arc<CachedResponse>) {
        let entry = address(entry);
        let mut by_id = self.lock();
        // Most conversations have one key: room for one (a Vec's first push
        // would make room for four, which cost ~190 bytes per entry).
        let listed = by_id
            .entry(key.id.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        match listed.iter_mut().find(|listed| listed.is(key)) {
            Some(listed) => listed.entry = entry,
            None => listed.push(Listed {
                partition: key.partition,
                flags: key.flags,
                entry,
            }),
        }
    }

    /// `entry` left `key`: the key is forgotten unless it holds another entry by now.
    pub fn left(&self, key: &CacheKey, entry: &Arc<CachedResponse>) {
        let entry = address(entry);
        let mut by_id = self.lock();
        let Some(listed) = by_id.get_mut(&key.id) else {
            return;
        };
        listed.retain(|listed| !(listed.is(key) && listed.entry == entry));
        if listed.is_empty() {
            by_id.remove(&key.id);
        }
    }

    /// The keys of conversation `id` now (a moment's view).
    pub fn keys_of(&self, id: &ConversationId) -> Vec<CacheKey> {
        let by_id = self.lock();
        let Some(listed) = by_id.get(id) else {
            return Vec::new();
        };
        listed
            .iter()
            .map(|listed| CacheKey {
                partition: listed.partition,
                id: id.clone(),
                flags: listed.flags,
            })
            .collect()
    }

    /// Keys listed, over every conversation.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConversationId, Vec<Listed>>> {
        // Every change is one step on the map: a poisoned lock is still usable.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn address(entry: &Arc<CachedResponse>) -> usize {
    Arc::as_ptr(entry) as usize
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::cache::policy::{EntryKind, Lifetime};

    fn key(id: &str, transcript: bool) -> CacheKey {
        CacheKey {
            partition: Partition::Anonymous,
            id: ConversationId::parse(id).unwrap(),
            flags: Flags {
                transcript,
                ..Flags::default()
            },
        }
    }

    fn entry() -> Arc<CachedResponse> {
        let lifetime = Lifetime {
            kind: EntryKind::Complete,
            fresh_for: Duration::from_secs(60),
            usable_for: Duration::from_secs(60),
            hard_in: None,
        };
        let body = Bytes::from_static(b"{}");
        Arc::new(CachedResponse::new(
            StatusCode::OK,
            &HeaderMap::new(),
            body,
            Instant::now(),
            lifetime,
        ))
    }

    #[test]
    fn a_late_departure_of_a_replaced_entry_keeps_its_key_listed() {
        let index = IdIndex::default();
        let (old, new) = (entry(), entry());
        index.held(&key("a", true), &old);
        index.held(&key("a", false), &old);
        index.held(&key("a", true), &new);
        index.left(&key("a", true), &old);
        assert_eq!(index.keys_of(&key("a", true).id).len(), 2);
        index.left(&key("a", true), &new);
        index.left(&key("a", false), &old);
        assert!(index.keys_of(&key("a", true).id).is_empty());
        assert_eq!(index.len(), 0, "an empty conversation is forgotten");
    }

    #[test]
    fn a_conversation_with_one_key_takes_room_for_one() {
        let index = IdIndex::default();
        let held = entry();
        index.held(&key("a", true), &held);
        assert_eq!(index.lock()[&key("a", true).id].capacity(), 1);
        index.held(&key("a", false), &held);
        assert_eq!(
            index.keys_of(&key("a", true).id).len(),
            2,
            "a second key still fits"
        );
    }
}
