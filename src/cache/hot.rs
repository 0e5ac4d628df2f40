//! Each thread's hot entries: the fresh entries it served last, found again without moka's shared read path.
//!
//! A moka read writes memory every worker writes (the entry's access time
//! and reference counts, the read-record channel), so two workers serving
//! the same entries pass those cache lines back and forth on every HIT.
//! A worker first looks in its own small map. It answers only with an entry
//! the store has not let go: moka's eviction listener retires each entry it
//! replaces, removes or evicts, before the call that replaced or removed it
//! returns, and a retired entry found here is dropped. The map holds weak
//! references, so an entry the store let go is freed as soon as no response
//! holds it, whatever the map still lists: the cache's byte bound counts
//! everything the maps keep alive. Every sixteenth lookup goes to moka all
//! the same, so moka still sees the hot entries read and keeps them over
//! colder ones when it needs room.

use std::cell::RefCell;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use moka::Equivalent;
use thread_local::ThreadLocal;

use super::entry::CachedResponse;
use super::key::CacheKey;

/// Entries a thread lists at most; a full map is emptied and starts again.
const CAPACITY: usize = 4096;
/// Entries larger than this are never listed here (one let go leaves its
/// bare allocation, not its body, until the thread next looks it up).
const MAX_WEIGHT: u32 = 64 * 1024;
/// One lookup in this many goes to moka, which records it.
const RECORD_EVERY: u32 = 16;

/// What a thread's map says about a key.
#[derive(Debug)]
pub(crate) enum Hot {
    /// Held, and not retired by the store.
    Held(Arc<CachedResponse>),
    /// Not held (or this lookup is one moka should record): ask the store.
    Ask,
}

/// Every thread's map, for one store.
#[derive(Default)]
pub(crate) struct HotEntries {
    threads: ThreadLocal<RefCell<ThreadEntries>>,
}

/// One thread's map, and its lookups (to pick the ones moka records).
struct ThreadEntries {
    entries: hashbrown::HashMap<CacheKey, Weak<CachedResponse>, ahash::RandomState>,
    lookups: u32,
}

impl Default for ThreadEntries {
    fn default() -> ThreadEntries {
        ThreadEntries {
            entries: hashbrown::HashMap::with_hasher(ahash::RandomState::new()),
            lookups: 0,
        }
    }
}

impl HotEntries {
    /// The entry this thread holds for `key`, unless the store retired it.
    pub(crate) fn get<Q>(&self, key: &Q) -> Hot
    where
        Q: Equivalent<CacheKey> + Hash + ?Sized,
    {
        let mut thread = self.threads.get_or_default().borrow_mut();
        thread.lookups = thread.lookups.wrapping_add(1);
        if thread.lookups % RECORD_EVERY == 0 {
            return Hot::Ask;
        }
        let Some(listed) = thread.entries.get(key) else {
            return Hot::Ask;
        };
        match listed.upgrade().filter(|entry| !entry.is_retired()) {
            Some(entry) => Hot::Held(entry),
            None => {
                thread.entries.remove(key);
                Hot::Ask
            }
        }
    }

    /// Holds `entry`, just read from the store, for `key` on this thread.
    pub(crate) fn hold(&self, key: CacheKey, entry: &Arc<CachedResponse>) {
        if entry.weight() > MAX_WEIGHT || entry.is_retired() {
            return;
        }
        let mut thread = self.threads.get_or_default().borrow_mut();
        if thread.entries.len() >= CAPACITY && !thread.entries.contains_key(&key) {
            thread.entries.clear();
        }
        thread.entries.insert(key, Arc::downgrade(entry));
    }
}

#[cfg(test)]
mod tests;
