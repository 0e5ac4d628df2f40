//! A connection's phase, packed in one atomic word: a change is one compare-and-swap, not a lock.
//!
//! The phase changes two or three times per request (a head's first bytes,
//! the request handed over, its answer made), from the connection's IO and
//! its service. A mutex cost each change two atomic writes (lock and
//! unlock); here a change is one, and a change that changes nothing (more
//! bytes of a head already begun) writes nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a connection is in its request cycle; times are `ConnectionClock` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Phase {
    /// Waiting for the first byte of a request head.
    Idle { since_ms: u64, first: bool },
    /// Some of a request head arrived.
    ReadingHead { since_ms: u64 },
    /// Requests are being answered; `read_more` when bytes of a next
    /// (pipelined) request arrived meanwhile.
    Busy { requests: u64, read_more: bool },
}

/// The low two bits say which phase; the rest hold its fields.
const TAG: u64 = 0b11;
const IDLE_FIRST: u64 = 0;
const IDLE: u64 = 1;
const READING_HEAD: u64 = 2;
const BUSY: u64 = 3;
/// In `Busy`, the bit above the tag: `read_more`.
const READ_MORE: u64 = 0b100;

impl Phase {
    /// Millisecond readings and request counts fit in 61 bits for longer
    /// than any connection lives (73 million years of milliseconds).
    fn pack(self) -> u64 {
        match self {
            Phase::Idle {
                since_ms,
                first: true,
            } => since_ms << 2 | IDLE_FIRST,
            Phase::Idle {
                since_ms,
                first: false,
            } => since_ms << 2 | IDLE,
            Phase::ReadingHead { since_ms } => since_ms << 2 | READING_HEAD,
            Phase::Busy {
                requests,
                read_more,
            } => requests << 3 | if read_more { READ_MORE } else { 0 } | BUSY,
        }
    }

    fn unpack(word: u64) -> Phase {
        match word & TAG {
            IDLE_FIRST => Phase::Idle {
                since_ms: word >> 2,
                first: true,
            },
            IDLE => Phase::Idle {
                since_ms: word >> 2,
                first: false,
            },
            READING_HEAD => Phase::ReadingHead {
                since_ms: word >> 2,
            },
            _ => Phase::Busy {
                requests: word >> 3,
                read_more: word & READ_MORE != 0,
            },
        }
    }
}

/// A [`Phase`] shared by a connection's IO and its service.
pub(in crate::server) struct SharedPhase(AtomicU64);

impl SharedPhase {
    pub fn new(phase: Phase) -> SharedPhase {
        SharedPhase(AtomicU64::new(phase.pack()))
    }

    pub fn get(&self) -> Phase {
        Phase::unpack(self.0.load(Ordering::Acquire))
    }

    /// Applies `change`; it may run more than once if another change lands
    /// between reading the phase and writing the new one.
    pub fn update(&self, mut change: impl FnMut(Phase) -> Phase) {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let new = change(Phase::unpack(current)).pack();
            if new == current {
                return;
            }
            match self
                .0
                .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_reads_back_as_it_was_written() {
        let large = (1 << 61) - 1;
        for since_ms in [0, 1, 59_999, large] {
            for phase in [
                Phase::Idle {
                    since_ms,
                    first: true,
                },
                Phase::Idle {
                    since_ms,
                    first: false,
                },
                Phase::ReadingHead { since_ms },
                Phase::Busy {
                    requests: since_ms,
                    read_more: false,
                },
                Phase::Busy {
                    requests: since_ms,
                    read_more: true,
                },
            ] {
                assert_eq!(SharedPhase::new(phase).get(), phase);
            }
        }
    }

    #[test]
    fn concurrent_changes_are_none_of_them_lost() {
        let shared = std::sync::Arc::new(SharedPhase::new(Phase::ReadingHead { since_ms: 0 }));
        let count_up = |shared: std::sync::Arc<SharedPhase>| {
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    shared.update(|phase| match phase {
                        Phase::ReadingHead { since_ms } => Phase::ReadingHead {
                            since_ms: since_ms + 1,
                        },
                        other => other,
                    });
                }
            })
        };
        let threads = [count_up(shared.clone()), count_up(shared.clone())];
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(shared.get(), Phase::ReadingHead { since_ms: 20_000 });
    }
}
