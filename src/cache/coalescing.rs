//! Coalescing: one fetch per key runs in its own task and every concurrent caller shares its outcome.
//!
//! The fetch is spawned, so it runs to its end even when the caller that
//! started it hangs up; whatever it yields (a stored answer, a 404, an error)
//! is handed to every caller that joined it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Whether a caller started the fetch or joined one already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Joined a fetch another request started (`collapsed` in `cache-status`).
    Collapsed,
}

/// The fetch task ended without an outcome (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLost;

type Slot<T> = watch::Receiver<Option<T>>;

/// The fetches in flight, by key.
pub struct InFlight<K, T> {
    running: Mutex<HashMap<K, Slot<T>>>,
}

impl<K, T> Default for InFlight<K, T> {
    fn default() -> Self {
        InFlight {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, T> InFlight<K, T>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the fetch running for `key`, or starts `fetch` in a task of its own.
    pub async fn run<F>(
        self: &Arc<Self>,
        key: K,
        fetch: impl FnOnce() -> F,
    ) -> Result<(T, Role), FetchLost>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (mut slot, role) = self.join_or_start(key, fetch);
        let outcome = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| FetchLost)?
            .clone()
            .ok_or(FetchLost)?;
        Ok((outcome, role))
    }

    /// Starts `fetch` in a task of its own unless a fetch for `key` is
    /// running; does not wait. True when it started one.
    pub fn start_if_idle<F>(self: &Arc<Self>, key: K, fetch: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.join_or_start(key, fetch).1 == Role::Leader
    }

    fn join_or_start<F>(self: &Arc<Self>, key: K, fetch: impl FnOnce() -> F) -> (Slot<T>, Role)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(slot) = running.get(&key) {
            return (slot.clone(), Role::Collapsed);
        }
        let (sender, slot) = watch::channel(None);
        running.insert(key.clone(), slot.clone());
        drop(running);
        let deregistration = Deregistration {
            in_flight: Arc::clone(self),
            key,
        };
        let fetch = fetch();
        tokio::spawn(async move {
            let outcome = fetch.await;
            drop(deregistration);
            // Nobody may be waiting any more; that is fine.
            let _ = sender.send(Some(outcome));
        });
        (slot, Role::Leader)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<T>>> {
        // The map is never left half-updated, so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a fetch from the table when its task ends, normally or by panic.
struct Deregistration<K: Eq + Hash, T> {
    in_flight: Arc<InFlight<K, T>>,
    key: K,
}

impl<K: Eq + Hash, T> Drop for Deregistration<K, T> {
    fn drop(&mut self) {
        let mut running = self
            .in_flight
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let in_flight: Arc<InFlight<&str, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let in_flight = in_flight.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                in_flight
                    .run("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for task in tasks {
            let (value, role) = task.await.unwrap().unwrap();
            assert_eq!(value, 7);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        let next = in_flight.run("k", || async { 8 }).await;
        assert_eq!(
            next,
            Ok((8, Role::Leader)),
            "the ended fetch left the table"
        );
    }

    #[tokio::test]
    async fn the_fetch_outlives_a_leader_that_hangs_up() {
        let in_flight: Arc<InFlight<&str, u32>> = Arc::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let leader = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                in_flight
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = done_tx.send(());
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.run("k", || async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let (value, role) = follower.await.unwrap().unwrap();
        assert_eq!((value, role), (1, Role::Collapsed));
        assert!(done_rx.await.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_fetch_frees_its_key() {
        let in_flight: Arc<InFlight<&str, u32>> = Arc::default();
        let lost = in_flight.run("k", || async { panic!("boom") }).await;
        assert_eq!(lost, Err(FetchLost));
        let again = in_flight.run("k", || async { 3 }).await;
        assert_eq!(again, Ok((3, Role::Leader)));
    }

    #[tokio::test]
    async fn a_background_fetch_starts_once_and_can_be_joined() {
        let in_flight: Arc<InFlight<&str, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                5
            }
        };
        assert!(in_flight.start_if_idle("k", fetch(calls.clone())));
        assert!(!in_flight.start_if_idle("k", fetch(calls.clone())));
        let joined = in_flight.run("k", fetch(calls.clone())).await;
        assert_eq!(joined, Ok((5, Role::Collapsed)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_keys_fetch_separately() {
        let in_flight: Arc<InFlight<&str, u32>> = Arc::default();
        let (a, b) = tokio::join!(
            in_flight.run("a", || async { 1 }),
            in_flight.run("b", || async { 2 })
        );
        assert_eq!(a, Ok((1, Role::Leader)));
        assert_eq!(b, Ok((2, Role::Leader)));
    }
}
