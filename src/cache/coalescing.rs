//! Coalescing: one fetch per key runs in its own task and every concurrent caller shares its outcome.
//!
//! The fetch is spawned, so it runs to its end even when the caller that
//! started it hangs up; whatever it yields (a stored answer, a 404, an error)
//! is handed to every caller that joined it, with what its starter said
//! about itself (the table keeps that value and reads nothing of it).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Whether a caller started the fetch or joined one already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<L> {
    Leader,
    /// Joined a fetch another request started (`collapsed` in
    /// `cache-status`); `leader` is what that request gave when it started it.
    Collapsed {
        leader: L,
    },
}

/// The fetch task ended without an outcome (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLost;

type Slot<T> = watch::Receiver<Option<T>>;

/// A fetch in flight: where its outcome will be, and what its starter gave.
struct Flight<T, L> {
    slot: Slot<T>,
    leader: L,
}

/// The fetches in flight, by key; `L` is what a starter gives to be handed to
/// the callers that join its fetch.
pub struct InFlight<K, T, L> {
    running: Mutex<HashMap<K, Flight<T, L>>>,
}

impl<K, T, L> Default for InFlight<K, T, L> {
    fn default() -> Self {
        InFlight {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, T, L> InFlight<K, T, L>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    L: Clone + Send + Sync + 'static,
{
    /// Joins the fetch running for `key`, or starts `fetch` in a task of its
    /// own, with `leader` for the callers that join it.
    pub async fn run<F>(
        self: &Arc<Self>,
        key: K,
        leader: L,
        fetch: impl FnOnce() -> F,
    ) -> Result<(T, Role<L>), FetchLost>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (mut slot, role) = self.join_or_start(key, leader, fetch);
        let outcome = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| FetchLost)?
            .clone()
            .ok_or(FetchLost)?;
        Ok((outcome, role))
    }

    /// Starts `fetch` in a task of its own, with `leader` for the callers
    /// that join it, unless a fetch for `key` is running; does not wait.
    /// True when it started one.
    pub fn start_if_idle<F>(self: &Arc<Self>, key: K, leader: L, fetch: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = T> + Send + 'static,
    {
        matches!(self.join_or_start(key, leader, fetch).1, Role::Leader)
    }

    fn join_or_start<F>(
        self: &Arc<Self>,
        key: K,
        leader: L,
        fetch: impl FnOnce() -> F,
    ) -> (Slot<T>, Role<L>)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(flight) = running.get(&key) {
            let role = Role::Collapsed {
                leader: flight.leader.clone(),
            };
            return (flight.slot.clone(), role);
        }
        let (sender, slot) = watch::channel(None);
        let flight = Flight {
            slot: slot.clone(),
            leader,
        };
        running.insert(key.clone(), flight);
        drop(running);
        let deregistration = Deregistration {
            in_flight: Arc::clone(self),
            key,
        };
        // Boxed where it is made: a fetch's future is several KB (the
        // upstream call's inside it), and the task moves what it is given
        // on spawning and again when it finishes; a box moves as a pointer.
        let fetch = Box::pin(fetch());
        tokio::spawn(async move {
            let outcome = fetch.await;
            drop(deregistration);
            // Nobody may be waiting any more; that is fine.
            let _ = sender.send(Some(outcome));
        });
        (slot, Role::Leader)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<T, L>>> {
        // The map is never left half-updated, so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a fetch from the table when its task ends, normally or by panic.
struct Deregistration<K: Eq + Hash, T, L> {
    in_flight: Arc<InFlight<K, T, L>>,
    key: K,
}

impl<K: Eq + Hash, T, L> Drop for Deregistration<K, T, L> {
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

    /// The starter's label is which caller it was.
    type Table = InFlight<&'static str, u32, usize>;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_learn_who_started_it() {
        let in_flight: Arc<Table> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for caller in 0..50 {
            let in_flight = in_flight.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                let ran = in_flight
                    .run("k", caller, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await;
                (caller, ran)
            }));
        }
        let mut roles = Vec::new();
        for task in tasks {
            let (caller, ran) = task.await.unwrap();
            let (value, role) = ran.unwrap();
            assert_eq!(value, 7);
            roles.push((caller, role));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let leaders: Vec<usize> = roles
            .iter()
            .filter(|(_, role)| *role == Role::Leader)
            .map(|(caller, _)| *caller)
            .collect();
        assert_eq!(leaders.len(), 1);
        for (caller, role) in &roles {
            if *caller != leaders[0] {
                assert_eq!(*role, Role::Collapsed { leader: leaders[0] });
            }
        }
        let next = in_flight.run("k", 99, || async { 8 }).await;
        assert_eq!(
            next,
            Ok((8, Role::Leader)),
            "the ended fetch left the table"
        );
    }

    #[tokio::test]
    async fn the_fetch_outlives_a_leader_that_hangs_up() {
        let in_flight: Arc<Table> = Arc::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let leader = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                in_flight
                    .run("k", 1, || async move {
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
            tokio::spawn(async move { in_flight.run("k", 2, || async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let (value, role) = follower.await.unwrap().unwrap();
        assert_eq!((value, role), (1, Role::Collapsed { leader: 1 }));
        assert!(done_rx.await.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_fetch_frees_its_key() {
        let in_flight: Arc<Table> = Arc::default();
        let lost = in_flight.run("k", 1, || async { panic!("boom") }).await;
        assert_eq!(lost, Err(FetchLost));
        let again = in_flight.run("k", 2, || async { 3 }).await;
        assert_eq!(again, Ok((3, Role::Leader)));
    }

    #[tokio::test]
    async fn a_background_fetch_starts_once_and_can_be_joined() {
        let in_flight: Arc<Table> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                5
            }
        };
        assert!(in_flight.start_if_idle("k", 1, fetch(calls.clone())));
        assert!(!in_flight.start_if_idle("k", 2, fetch(calls.clone())));
        let joined = in_flight.run("k", 3, fetch(calls.clone())).await;
        assert_eq!(joined, Ok((5, Role::Collapsed { leader: 1 })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_keys_fetch_separately() {
        let in_flight: Arc<Table> = Arc::default();
        let (a, b) = tokio::join!(
            in_flight.run("a", 1, || async { 1 }),
            in_flight.run("b", 2, || async { 2 })
        );
        assert_eq!(a, Ok((1, Role::Leader)));
        assert_eq!(b, Ok((2, Role::Leader)));
    }
}
