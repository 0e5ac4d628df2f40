//! The workers: one single-threaded tokio runtime per thread, each serving the connections
//! handed to it (nginx's worker processes, as threads).
//!
//! A connection stays on the worker it was handed to: its requests, the tasks
//! they spawn and its timers run there, so no worker wakes another to share
//! out work (with work stealing, those wakeups cost more CPU than a HIT's own
//! work; see the README's Benchmarks). A new connection goes to the worker
//! with the fewest open. Accepting, signals, reloads and the summary run on
//! the runtime that called [`App::run`](super::App::run).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Names of the workers' threads (`top -H`, `/proc/PID/task/*/comm`).
pub const WORKER_THREAD_NAME: &str = "ayra-worker";
/// Names of the threads tokio starts for blocking work (compression, snapshots).
pub const BLOCKING_THREAD_NAME: &str = "ayra-blocking";

/// One worker: where its tasks are spawned, and its open connections.
struct Worker {
    runtime: Handle,
    open: Arc<AtomicUsize>,
}

/// The running workers; dropping this stops them, dropping their unfinished tasks.
pub(super) struct Workers {
    workers: Vec<Worker>,
    /// Each worker's thread runs until its sender is dropped.
    _stops: Vec<oneshot::Sender<()>>,
}

/// A connection's place on its worker, given up when dropped.
pub(super) struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` workers, each on its own thread; none: one per CPU.
    pub(super) fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        let mut workers = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .thread_name(BLOCKING_THREAD_NAME)
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.push(Worker {
                runtime: runtime.handle().clone(),
                open: Arc::new(AtomicUsize::new(0)),
            });
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("{WORKER_THREAD_NAME}-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Workers {
            workers,
            _stops: stops,
        })
    }

    /// The worker with the fewest open connections (the first of equals), and a seat there.
    pub(super) fn assign(&self) -> (&Handle, Seat) {
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        (&worker.runtime, Seat(Arc::clone(&worker.open)))
    }
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
                let (handle, seat) = workers.assign();
                (index_of(handle), seat)
            })
            .collect();
        let placed: Vec<usize> = seats.iter().map(|(index, _)| *index).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
        // Worker 1 loses both its connections: the next two go there.
        seats.retain(|(index, _)| *index != 1);
        let (first, _a) = workers.assign();
        let (second, _b) = workers.assign();
        assert_eq!(index_of(first), 1);
        assert_eq!(index_of(second), 1);
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start(Some(1)).unwrap();
        let (handle, _seat) = workers.assign();
        let handle = handle.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        handle.spawn(async move {
            // Held until the runtime drops this task.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert!(rx.recv().is_err(), "the task was dropped with its worker");
    }
}
