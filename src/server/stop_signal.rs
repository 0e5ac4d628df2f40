//! The drain signal as one connection waits for it: cheap to poll on each of the connection's wake-ups.
//!
//! A connection's task is polled every time its socket is ready, and each
//! poll asked the shutdown `watch` whether it changed. Its `changed()` future
//! takes the channel's lock on every poll, a lock all connections share.
//! Here the version is read without a lock, and the waiting future is polled
//! again only when the task's waker changed (tokio's stays the same for a
//! task's whole life); a change wakes the task through the waker it left.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

use super::last_waker::LastWaker;

/// Waits for the first change of the shutdown signal (or its sender's end).
pub(super) struct StopSignal {
    /// Read for a change, lock-free, on every poll.
    probe: watch::Receiver<bool>,
    /// Holds the task's place among the signal's waiters.
    waiting: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker `waiting` was last polled with.
    registered: LastWaker,
}

impl StopSignal {
    pub fn new(stop: watch::Receiver<bool>) -> StopSignal {
        let mut waiter = stop.clone();
        StopSignal {
            probe: stop,
            waiting: Box::pin(async move {
                let _ = waiter.changed().await;
            }),
            registered: LastWaker::default(),
        }
    }

    /// Ready once the signal changed since this was made, or its sender is gone.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.probe.has_changed().unwrap_or(true) {
            return Poll::Ready(());
        }
        if self.registered.holds(cx) {
            return Poll::Pending;
        }
        self.waiting.as_mut().poll(cx)
    }

    /// Waits for the signal.
    pub fn stopped(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_stopped(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// A signal on a new channel, already polled once, pending, with a
    /// waker that wakes nobody.
    fn polled_once() -> (watch::Sender<bool>, StopSignal) {
        let (tx, rx) = watch::channel(false);
        let mut signal = StopSignal::new(rx);
        let mut idle = Context::from_waker(Waker::noop());
        assert!(signal.poll_stopped(&mut idle).is_pending());
        (tx, signal)
    }

    #[tokio::test]
    async fn a_change_wakes_the_task_that_polls_last_even_after_another_waker() {
        // First polled with a waker that wakes nobody: the task that polls
        // later must still be woken by the change.
        let (tx, mut signal) = polled_once();
        let mut idle = Context::from_waker(Waker::noop());
        assert!(signal.poll_stopped(&mut idle).is_pending());
        let waiting = tokio::spawn(async move { signal.stopped().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the change woke the waiting task")
            .unwrap();
    }

    #[tokio::test]
    async fn a_sender_gone_counts_as_the_signal() {
        let (tx, mut signal) = polled_once();
        drop(tx);
        let mut idle = Context::from_waker(Waker::noop());
        assert!(signal.poll_stopped(&mut idle).is_ready());
    }
}
