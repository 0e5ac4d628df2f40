//! Precompression: each stored body compressed once per offered coding, in the background, a few at a time.
//!
//! Nothing queues: when every slot is busy (stores outpace compression), the
//! entry is left as it is and the next HIT on it tries again. Memory never
//! grows with a backlog, and the entries that are read get compressed.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::encoding::Encoding;
use super::entry::CachedResponse;
use super::key::CacheKey;
use super::representation::Variant;
use super::store::Store;

/// Compresses stored entries off the request path, a few at a time.
pub(super) struct Precompressor {
    /// Compressions running at once (CPU-bound work: one per core).
    slots: Arc<Semaphore>,
}

impl Precompressor {
    pub fn new() -> Precompressor {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Precompressor {
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Starts compressing `entry` into every coding of `encodings` if a slot
    /// is free now; when done, the entry held for `key` is upgraded, if it is
    /// still this one. Entries already compressed are left alone.
    pub fn start(
        self: &Arc<Self>,
        store: &Store,
        key: CacheKey,
        entry: Arc<CachedResponse>,
        encodings: &Arc<[Encoding]>,
    ) {
        let Some(etag) = entry.etag().cloned() else {
            return;
        };
        if encodings.is_empty() || !entry.compressible() || entry.has_variants() {
            return;
        }
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return;
        };
        let store = store.clone();
        let encodings = Arc::clone(encodings);
        tokio::spawn(async move {
            let _slot = slot;
            let body = entry.body().clone();
            let compressed = tokio::task::spawn_blocking(move || {
                encodings
                    .iter()
                    .filter_map(|&encoding| Variant::compress(encoding, &body, &etag).ok())
                    .collect::<Vec<_>>()
            })
            .await;
            if let Ok(variants) = compressed {
                let upgraded = Arc::new(entry.with_variants(variants));
                store.upgrade(key, &entry, upgraded).await;
            }
        });
    }
}
