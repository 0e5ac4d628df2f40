//! A connection's check timer as its task waits for it: polled only when it may have fired.
//!
//! A connection's task is polled every time its socket is ready, and each
//! poll also polled the timer that looks at the connection's
//! [`Activity`](super::activity::Activity): tokio's `Sleep` re-registers the task's waker
//! on every poll, about a hundred instructions and two atomic writes per
//! request. Here the timer is polled again only when it fired (read from
//! its state, lock-free), when it was reset, or when the task's waker changed
//! ([`LastWaker`]); until then the timer holds the waker of the last poll,
//! and firing wakes the task through it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::Sleep;

use super::last_waker::LastWaker;

/// Fires at its deadline; [`CheckTimer::reset`] sets the next one.
pub(super) struct CheckTimer {
    sleep: Pin<Box<Sleep>>,
    /// The waker `sleep` was last polled with, since it was last reset.
    registered: LastWaker,
}

impl CheckTimer {
    /// A timer that fires at `at`.
    pub fn at(at: Instant) -> CheckTimer {
        CheckTimer {
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
            registered: LastWaker::default(),
        }
    }

    /// Ready once the deadline has passed; until [`CheckTimer::reset`], ready every poll.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let may_have_fired = self.sleep.is_elapsed();
        if !may_have_fired && self.registered.holds(cx) {
            return Poll::Pending;
        }
        self.sleep.as_mut().poll(cx)
    }

    /// Waits for the deadline.
    pub fn fired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_fired(cx))
    }

    /// Moves the deadline to `at`; the next poll registers it.
    pub fn reset(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at.into());
        self.registered.forget();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant as Clock;

    use std::task::Waker;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Waits for `timer` to fire, failing the test if it has not an hour on.
    async fn fired(timer: &mut CheckTimer) {
        let hour = Duration::from_secs(3600);
        assert!(
            tokio::time::timeout(hour, timer.fired()).await.is_ok(),
            "the timer never woke its task"
        );
    }

    /// A timer `seconds` from now on tokio's (paused) clock, and that start.
    fn timer_in(seconds: u32) -> (Clock, CheckTimer) {
        let start = Clock::now();
        (start, CheckTimer::at((start + SECOND * seconds).into_std()))
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_deadline_though_polled_only_once_before() {
        let (start, mut timer) = timer_in(5);
        let fired = tokio::spawn(async move {
            // Polled once, then left alone (the same waker) until it fires.
            std::future::poll_fn(|cx| Poll::Ready(timer.poll_fired(cx).is_pending())).await && {
                fired(&mut timer).await;
                true
            }
        });
        assert!(fired.await.unwrap());
        assert_eq!(Clock::now() - start, SECOND * 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_deadline_is_the_one_that_fires() {
        let (start, mut timer) = timer_in(5);
        let fired_at = tokio::spawn(async move {
            let pending =
                std::future::poll_fn(|cx| Poll::Ready(timer.poll_fired(cx).is_pending())).await;
            assert!(pending);
            // Moved later, then earlier than the first deadline.
            timer.reset((start + SECOND * 60).into_std());
            timer.reset((start + SECOND * 2).into_std());
            fired(&mut timer).await;
            Clock::now()
        });
        assert_eq!(fired_at.await.unwrap() - start, SECOND * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_polls_with_a_new_waker_is_the_one_woken() {
        // First polled with a waker that wakes nobody: the task that polls
        // later must still be woken when the deadline passes.
        let (start, mut timer) = timer_in(3);
        let mut idle = Context::from_waker(Waker::noop());
        assert!(timer.poll_fired(&mut idle).is_pending());
        let fired_at = tokio::spawn(async move {
            fired(&mut timer).await;
            Clock::now()
        });
        assert_eq!(fired_at.await.unwrap() - start, SECOND * 3);
    }
}
