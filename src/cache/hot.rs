//! Each thread's hot entries: the fresh entries it served last, found again without moka's shared read path.
//!
//! A moka read writes memory every worker writes (the entry's access time
//! and reference counts, the read-record channel), so two workers serving
//! the same entries pass those cache lines back and forth on every HIT.
//! A worker first looks in its own small map. What it holds there is only
//! ever what the store held: the store counts its changes (a replacement, a
//! removal, a purge, an eviction) and a thread's map is emptied as soon as
//! it sees the count move, before it answers from it. Every sixteenth
//! lookup goes to moka all the same, so moka still sees the hot entries
//! read and keeps them over colder ones when it needs room.

use std::cell::RefCell;
use std::hash::Hash;
use std::sync::Arc;

use moka::Equivalent;
use thread_local::ThreadLocal;

use super::entry::CachedResponse;
use super::key::CacheKey;

/// Entries a thread holds at most; a full map is emptied and starts again.
const CAPACITY: usize = 4096;
/// Entries larger than this are never held here (a held entry outlives its
/// eviction until the thread's next lookup).
const MAX_WEIGHT: u32 = 64 * 1024;
/// One lookup in this many goes to moka, which records it.
const RECORD_EVERY: u32 = 16;

/// What a thread's map says about a key.
#[derive(Debug)]
pub(crate) enum Hot {
    /// Held, and the store has not changed since.
    Held(Arc<CachedResponse>),
    /// Not held (or this lookup is one moka should record): ask the store.
    Ask,
}

/// Every thread's map, for one store.
#[derive(Default)]
pub(crate) struct HotEntries {
    threads: ThreadLocal<RefCell<ThreadEntries>>,
}

/// One thread's map.
struct ThreadEntries {
    /// The store's change count the held entries were read at.
    changes: u64,
    entries: hashbrown::HashMap<CacheKey, Arc<CachedResponse>, ahash::RandomState>,
    lookups: u32,
}

impl Default for ThreadEntries {
    fn default() -> ThreadEntries {
        ThreadEntries {
            changes: 0,
            entries: hashbrown::HashMap::with_hasher(ahash::RandomState::new()),
            lookups: 0,
        }
    }
}

impl ThreadEntries {
    /// Lets go of everything held: the store's change count is now `changes`.
    fn start_at(&mut self, changes: u64) {
        self.entries.clear();
        self.changes = changes;
    }
}

impl HotEntries {
    /// The entry this thread holds for `key`, if the store's change count is still `changes`.
    pub(crate) fn get<Q>(&self, key: &Q, changes: u64) -> Hot
    where
        Q: Equivalent<CacheKey> + Hash + ?Sized,
    {
        let mut thread = self.threads.get_or_default().borrow_mut();
        if thread.changes != changes {
            thread.start_at(changes);
            return Hot::Ask;
        }
        thread.lookups = thread.lookups.wrapping_add(1);
        if thread.lookups % RECORD_EVERY == 0 {
            return Hot::Ask;
        }
        match thread.entries.get(key) {
            Some(entry) => Hot::Held(Arc::clone(entry)),
            None => Hot::Ask,
        }
    }

    /// Holds `entry` for `key` on this thread, read from the store when its
    /// change count was `changes` (read before the store was asked).
    pub(crate) fn hold(&self, key: CacheKey, entry: &Arc<CachedResponse>, changes: u64) {
        if entry.weight() > MAX_WEIGHT {
            return;
        }
        let mut thread = self.threads.get_or_default().borrow_mut();
        if changes < thread.changes {
            // The store changed since it was asked: what it answered may be gone.
            return;
        }
        if changes > thread.changes {
            thread.start_at(changes);
        }
        if thread.entries.len() >= CAPACITY && !thread.entries.contains_key(&key) {
            thread.entries.clear();
        }
        thread.entries.insert(key, Arc::clone(entry));
    }
}

#[cfg(test)]
mod tests;
