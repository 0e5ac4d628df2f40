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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn the_future_is_polled_again_only_for_a_new_waker_or_after_a_reset() {
        let first = Waker::from(Arc::new(Noop));
        let second = Waker::from(Arc::new(Noop));
        let mut last = LastWaker::default();
        let holds = |last: &mut LastWaker, waker: &Waker| last.holds(&Context::from_waker(waker));
        assert!(!holds(&mut last, &first), "never polled: poll it");
        assert!(holds(&mut last, &first), "the same waker: it holds it");
        assert!(
            holds(&mut last, &first.clone()),
            "a clone wakes the same task"
        );
        assert!(!holds(&mut last, &second), "another waker: poll it");
        assert!(holds(&mut last, &second), "that one is held now");
        last.forget();
        assert!(!holds(&mut last, &second), "reset: poll it again");
    }
}
