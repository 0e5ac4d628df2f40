//! Taking turns: waiting calls granted in rotation across client identities, first come first served within one; pure.

use std::collections::{HashMap, VecDeque};

use crate::domain::Fingerprint;

/// Whose turn a waiting call takes: the client, by its own token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    /// Every client without a token, together.
    Anonymous,
    /// The fingerprint of the client's own token (in pass-through mode its
    /// `Authorization`, with a proxy-held key the token it presented).
    Token(Fingerprint),
}

/// The waiting calls of one budget, in the order they will be granted.
///
/// Identities with waiting calls form a ring: each grant goes to the
/// identity at the front, which then moves to the back if it has more
/// calls waiting. An identity that starts waiting joins at the back, so a
/// client with hundreds of calls queued delays another's one call by at
/// most one grant per identity ahead of it.
#[derive(Debug)]
pub struct Turns<T> {
    queues: HashMap<ClientIdentity, VecDeque<T>>,
    rotation: VecDeque<ClientIdentity>,
    len: usize,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Turns {
            queues: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Turns<T> {
    /// Calls waiting, all identities together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls of `who` waiting.
    pub fn waiting_for(&self, who: &ClientIdentity) -> usize {
        self.queues.get(who).map_or(0, VecDeque::len)
    }

    /// Queues a call of `who` behind its earlier ones.
    pub fn push(&mut self, who: ClientIdentity, item: T) {
        let queue = self.queues.entry(who).or_default();
        if queue.is_empty() {
            self.rotation.push_back(who);
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// The call whose turn it is, taken out.
    pub fn pop_next(&mut self) -> Option<(ClientIdentity, T)> {
        let who = self.rotation.pop_front()?;
        let queue = self.queues.get_mut(&who)?;
        let item = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&who);
        } else {
            self.rotation.push_back(who);
        }
        self.len -= 1;
        Some((who, item))
    }

    /// Takes out the first call of `who` that `matches` (a call that gave up).
    pub fn remove(&mut self, who: &ClientIdentity, matches: impl Fn(&T) -> bool) -> Option<T> {
        let queue = self.queues.get_mut(who)?;
        let item = queue.remove(queue.iter().position(matches)?)?;
        if queue.is_empty() {
            self.queues.remove(who);
            self.rotation.retain(|waiting| waiting != who);
        }
        self.len -= 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> ClientIdentity {
        ClientIdentity::Token(Fingerprint::of(name.as_bytes()))
    }

    fn drain(turns: &mut Turns<u32>) -> Vec<u32> {
        std::iter::from_fn(|| turns.pop_next().map(|(_, item)| item)).collect()
    }

    #[test]
    fn one_identity_is_served_first_come_first_served() {
        let mut turns = Turns::default();
        for n in 1..=4 {
            turns.push(client("a"), n);
        }
        assert_eq!((turns.len(), turns.waiting_for(&client("a"))), (4, 4));
        assert_eq!(drain(&mut turns), [1, 2, 3, 4]);
        assert!(turns.is_empty());
    }

    #[test]
    fn identities_are_granted_in_rotation() {
        let mut turns = Turns::default();
        for n in [1, 2, 3, 4] {
            turns.push(client("a"), n);
        }
        turns.push(client("b"), 10);
        turns.push(ClientIdentity::Anonymous, 20);
        turns.push(client("b"), 11);
        assert_eq!(drain(&mut turns), [1, 10, 20, 2, 11, 3, 4]);
    }

    #[test]
    fn a_newcomer_waits_at_most_one_grant_behind_a_busy_client() {
        let mut turns = Turns::default();
        for n in 0..300 {
            turns.push(client("backfill"), n);
        }
        for _ in 0..7 {
            turns.pop_next();
        }
        turns.push(client("dashboard"), 1000);
        let order: Vec<_> = (0..2).map(|_| turns.pop_next().unwrap()).collect();
        assert_eq!(order[0].0, client("backfill"));
        assert_eq!(order[1], (client("dashboard"), 1000));
    }

    #[test]
    fn a_call_that_gives_up_leaves_the_queue_and_the_rotation() {
        let mut turns = Turns::default();
        turns.push(client("a"), 1);
        turns.push(client("b"), 2);
        turns.push(client("b"), 3);
        assert_eq!(turns.remove(&client("b"), |n| *n == 3), Some(3));
        assert_eq!(turns.remove(&client("b"), |n| *n == 3), None);
        assert_eq!(turns.remove(&client("a"), |n| *n == 1), Some(1));
        assert_eq!(turns.len(), 1);
        assert_eq!(drain(&mut turns), [2]);
        turns.push(client("a"), 4);
        assert_eq!(drain(&mut turns), [4], "no stale place in the rotation");
    }
}
