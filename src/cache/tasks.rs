//! The cache's background work, handed to its owner: the cache's constructor never spawns.

use std::future::Future;
use std::pin::Pin;

/// One piece of background work.
pub type BackgroundTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The work that must run beside a [`Cache`](super::Cache), each piece named
/// for logs: the shared tier's connection and its notices between replicas,
/// and following other replicas' purges. Empty without a shared tier.
///
/// The contract: whoever built the cache spawns every task once, on the
/// runtime that does the process's control work (not a worker's), before it
/// serves requests, and aborts them at shutdown. They hold nothing that must
/// be flushed; none ends by itself while the process runs (the connecting
/// task ends once connected). Left unspawned, the cache still serves, but
/// never reaches Redis and follows no other replica's purge.
#[must_use = "the cache's background work does nothing until it is spawned"]
#[derive(Default)]
pub struct CacheTasks {
    tasks: Vec<(&'static str, BackgroundTask)>,
}

impl CacheTasks {
    /// Adds `task`, named `name`.
    pub(crate) fn add(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push((name, Box::pin(task)));
    }

    /// Adds an already boxed `task`, named `name`.
    pub(crate) fn add_boxed(&mut self, name: &'static str, task: BackgroundTask) {
        self.tasks.push((name, task));
    }

    /// The names of the tasks, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }
}

impl IntoIterator for CacheTasks {
    type Item = (&'static str, BackgroundTask);
    type IntoIter = std::vec::IntoIter<(&'static str, BackgroundTask)>;

    fn into_iter(self) -> Self::IntoIter {
        self.tasks.into_iter()
    }
}
