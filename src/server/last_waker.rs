//! The waker a wrapped future was last polled with: poll it again only when the task's waker changed.
//!
//! A connection's task is polled on every socket wake-up, and it waits on
//! futures besides its connection (the drain signal, the check timer) whose
//! polls cost a lock or a waker registration each time. Polled once, such a
//! future holds the task's waker and wakes it when it is ready; tokio's
//! waker stays the same for a task's whole life, so polling it again with
//! the same waker only repeats the registration. Any other waker (another
//! task, a test's) is registered afresh.

use std::task::{Context, Waker};

/// The waker last handed to a wrapped future.
#[derive(Default)]
pub(super) struct LastWaker(Option<Waker>);

impl LastWaker {
    /// Whether the wrapped future already holds `cx`'s waker; if not, the
    /// caller polls it, and this remembers the waker it is polled with.
    pub fn holds(&mut self, cx: &Context<'_>) -> bool {
        if self
            .0
            .as_ref()
            .is_some_and(|last| last.will_wake(cx.waker()))
        {
            return true;
        }
        self.0 = Some(cx.waker().clone());
        false
    }

    /// The wrapped future was reset: it holds no waker until polled again.
    pub fn forget(&mut self) {
        self.0 = None;
    }
}
