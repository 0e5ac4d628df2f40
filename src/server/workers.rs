//! The workers: tokio runtimes of one thread each, each serving the connections handed to it
//! (nginx's worker processes, as threads).
//!
//! A connection stays on the worker it was handed to: its requests, the tasks
//! they spawn, its upstream connections and its timers run there, so no
//! worker wakes another to share out work (with work stealing, those wakeups
//! cost more CPU than a HIT's own work; see docs/decisions.md). A new
//! connection goes to the worker with the fewest open. Accepting, signals,
//! reloads, the summary and the shared tier's background tasks run on the
//! runtime that runs [`App::run`](crate::app::App::run).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};

/// Names of the workers' threads (`top -H`, `/proc/PID/task/*/comm`), with the worker's index.
pub const WORKER_THREAD_NAME: &str = "ayra-worker";
/// Names of the threads tokio starts for blocking work (compression, snapshots).
pub const BLOCKING_THREAD_NAME: &str = "ayra-blocking";

/// One worker: its runtime, and its open connections.
struct Worker {
    runtime: Runtime,
    open: Arc<AtomicUsize>,
}

/// The running workers; dropping this stops them, dropping their unfinished tasks.
pub(super) struct Workers {
    workers: Vec<Worker>,
}

/// A connection's place on its worker, given up when dropped.
pub(super) struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` workers, each with its own thread; none: one per CPU.
    pub(super) fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        // Filled one by one: if a runtime cannot start, the ones before it
        // are stopped by `drop`, which may run inside an async context.
        let mut workers = Workers {
            workers: Vec::with_capacity(count),
        };
        for index in 0..count {
            workers.workers.push(Worker {
                runtime: worker_runtime(index)?,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(workers)
    }

    /// How many workers run.
    pub(super) fn count(&self) -> usize {
        self.workers.len()
    }

    /// The worker with the fewest open connections (the first of equals):
    /// its index, its runtime, and a seat there.
    pub(super) fn assign(&self) -> (usize, &Handle, Seat) {
        let (index, worker) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, worker)| worker.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        (
            index,
            worker.runtime.handle(),
            Seat(Arc::clone(&worker.open)),
        )
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in self.workers.drain(..) {
            // Not waiting: this may run on an async runtime's thread.
            worker.runtime.shutdown_background();
        }
    }
}

/// One worker's runtime: tokio's multi-thread scheduler with a single
/// thread, so nothing is ever stolen, but a task woken by the running one
/// runs next (its LIFO slot): a MISS's chain of wakeups (upstream
/// connection, fetch, client connection) runs without waiting its turn,
/// which measured 30-50 µs less per MISS than the current-thread scheduler.
fn worker_runtime(index: usize) -> io::Result<Runtime> {
    // tokio starts the worker thread at `build`, before any blocking one.
    let worker_named = AtomicBool::new(false);
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name_fn(move || {
            if worker_named.swap(true, Ordering::Relaxed) {
                BLOCKING_THREAD_NAME.to_owned()
            } else {
                format!("{WORKER_THREAD_NAME}-{index}")
            }
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which worker a handle belongs to: the index in its thread's name.
    fn index_of(handle: &Handle) -> usize {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send(name).unwrap();
        });
        let name = rx.recv().unwrap().unwrap();
        let index = name
            .strip_prefix(&format!("{WORKER_THREAD_NAME}-"))
            .unwrap();
        index.parse().unwrap()
    }

    #[test]
    fn connections_go_to_the_worker_with_the_fewest_open() {
        let workers = Workers::start(Some(3)).unwrap();
        let mut seats: Vec<(usize, Seat)> = (0..6)
            .map(|_| {
                let (index, handle, seat) = workers.assign();
                assert_eq!(index, index_of(handle), "the index named is the runtime's");
                (index, seat)
            })
            .collect();
        let placed: Vec<usize> = seats.iter().map(|(index, _)| *index).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
        // Worker 1 loses both its connections: the next two go there.
        seats.retain(|(index, _)| *index != 1);
        let (_, first, _a) = workers.assign();
        let (_, second, _b) = workers.assign();
        assert_eq!(index_of(first), 1);
        assert_eq!(index_of(second), 1);
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start(Some(1)).unwrap();
        let (_, handle, _seat) = workers.assign();
        let handle = handle.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        handle.spawn(async move {
            // Held until the runtime drops this task.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        let ended = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            ended,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the task was dropped with its worker"
        );
    }
}
