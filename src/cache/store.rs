//! Storage: a moka cache bounded by bytes, each entry expiring at its own deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::Expiry;

use super::entry::CachedResponse;
use super::key::CacheKey;
use crate::metrics::EvictionCause;

/// The in-memory tier.
#[derive(Clone)]
pub struct Store {
    entries: moka::future::Cache<CacheKey, Arc<CachedResponse>>,
}

impl Store {
    /// A store holding at most `max_bytes` of entries, none longer than
    /// `max_ttl`, telling `on_evict` why each entry left.
    pub fn new(
        max_bytes: u64,
        max_ttl: Duration,
        on_evict: impl Fn(EvictionCause) + Send + Sync + 'static,
    ) -> Store {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<CachedResponse>| entry.weight())
            .expire_after(EntryDeadline)
            .time_to_live(max_ttl)
            .eviction_listener(move |_key, _entry, cause| on_evict(eviction_cause(cause)))
            .build();
        Store { entries }
    }

    /// The entry for `key` if it is still fresh at `now`.
    pub async fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.entries
            .get(key)
            .await
            .filter(|entry| entry.is_fresh(now))
    }

    /// Stores (or replaces) the entry for `key`.
    pub async fn insert(&self, key: CacheKey, entry: Arc<CachedResponse>) {
        self.entries.insert(key, entry).await;
    }

    /// Drops every entry `drop` picks; returns how many were dropped.
    pub async fn purge_where(&self, drop: impl Fn(&CacheKey) -> bool) -> u64 {
        let mut purged = 0;
        for (key, _) in self.entries.iter() {
            if drop(&key) && self.entries.remove(&*key).await.is_some() {
                purged += 1;
            }
        }
        purged
    }

    /// Number of entries (approximate until pending housekeeping runs).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Bytes held, by the weigher (approximate until pending housekeeping runs).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending evictions now (tests and stats).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

fn eviction_cause(cause: RemovalCause) -> EvictionCause {
    match cause {
        RemovalCause::Expired => EvictionCause::Lifetime,
        RemovalCause::Size => EvictionCause::Size,
        RemovalCause::Explicit => EvictionCause::Purge,
        RemovalCause::Replaced => EvictionCause::Replaced,
    }
}

/// moka expiry that reads each entry's own deadline, on insert and on replace.
struct EntryDeadline;

impl Expiry<CacheKey, Arc<CachedResponse>> for EntryDeadline {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.fresh_until().saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.fresh_until().saturating_duration_since(updated_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Partition;
    use crate::cache::key::Flags;
    use crate::cache::policy::Lifetime;
    use crate::route::ConversationId;
    use bytes::Bytes;
    use http::HeaderMap;

    fn key(id: &str) -> CacheKey {
        CacheKey {
            partition: Partition::Anonymous,
            id: ConversationId::parse(id).unwrap(),
            flags: Flags::default(),
        }
    }

    fn entry(size: usize, received_at: Instant, fresh_for: Duration) -> Arc<CachedResponse> {
        let body = Bytes::from(vec![b'x'; size]);
        Arc::new(CachedResponse::new(
            &HeaderMap::new(),
            body,
            received_at,
            Lifetime { fresh_for },
        ))
    }

    #[tokio::test]
    async fn an_entry_past_its_deadline_is_not_returned() {
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
        let t0 = Instant::now();
        store
            .insert(key("a"), entry(10, t0, Duration::from_secs(5)))
            .await;
        assert!(store.get(&key("a"), t0).await.is_some());
        assert!(store
            .get(&key("a"), t0 + Duration::from_secs(5))
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_replaced_entry_takes_the_new_deadline() {
        let store = Store::new(1 << 20, Duration::from_secs(3600), |_| {});
        let t0 = Instant::now();
        store
            .insert(key("a"), entry(10, t0, Duration::from_millis(50)))
            .await;
        store
            .insert(key("a"), entry(10, t0, Duration::from_secs(60)))
            .await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        store.run_pending_tasks().await;
        assert!(store.get(&key("a"), Instant::now()).await.is_some());
    }

    #[tokio::test]
    async fn the_byte_bound_holds() {
        let store = Store::new(100_000, Duration::from_secs(3600), |_| {});
        let t0 = Instant::now();
        for i in 0..100 {
            let id = format!("c{i}");
            store
                .insert(key(&id), entry(10_000, t0, Duration::from_secs(60)))
                .await;
        }
        store.run_pending_tasks().await;
        assert!(
            store.weighted_size() <= 100_000,
            "{}",
            store.weighted_size()
        );
        assert!(store.entry_count() < 100);
    }
}
