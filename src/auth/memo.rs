//! The last credential each thread fingerprinted, so the next request with the same one skips SHA-256.
//!
//! A client sends the same `Authorization` on request after request, and a
//! worker thread serves one request at a time: comparing the bytes costs a
//! HIT less than hashing them again. The comparison runs in constant time,
//! so a request with another credential learns nothing of the one held here
//! from how long it took. The held bytes stay in this thread's memory until
//! a different credential replaces them; they are never logged or shown
//! (`Debug` is not implemented).

use std::cell::RefCell;

use crate::domain::Fingerprint;

/// Credentials longer than this are hashed every time, never held.
const MAX_HELD_BYTES: usize = 512;

thread_local! {
    static LAST: RefCell<Last> = const { RefCell::new(Last { bytes: Vec::new(), fingerprint: None }) };
}

/// The credential last fingerprinted on this thread.
struct Last {
    bytes: Vec<u8>,
    /// `None` until a credential has been held.
    fingerprint: Option<Fingerprint>,
}

/// The fingerprint of `credential`: the held one when the bytes are the same, else hashed (and held).
pub(super) fn fingerprint(credential: &[u8]) -> Fingerprint {
    if credential.len() > MAX_HELD_BYTES {
        return Fingerprint::of(credential);
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(held) = last.fingerprint {
            // Lengths differ: unequal at once (a credential's length is no secret).
            if constant_time_eq::constant_time_eq(&last.bytes, credential) {
                return held;
            }
        }
        let fingerprint = Fingerprint::of(credential);
        last.bytes.clear();
        last.bytes.extend_from_slice(credential);
        last.fingerprint = Some(fingerprint);
        fingerprint
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_gets_its_own_fingerprint_whatever_was_held() {
        // Same length, one byte apart, repeated and interleaved: each answer
        // must be the credential's own SHA-256, never the held one's.
        let credentials: [&[u8]; 6] = [
            b"Bearer sk_a",
            b"Bearer sk_a",
            b"Bearer sk_b",
            b"Bearer sk_a",
            b"",
            b"Bearer sk_b",
        ];
        for credential in credentials {
            assert_eq!(fingerprint(credential), Fingerprint::of(credential));
        }
        let long = vec![b'x'; MAX_HELD_BYTES + 1];
        assert_eq!(fingerprint(&long), Fingerprint::of(&long));
        let mut other = long.clone();
        other[MAX_HELD_BYTES] = b'y';
        assert_eq!(fingerprint(&other), Fingerprint::of(&other));
    }

    #[test]
    fn the_same_credential_is_not_hashed_again() {
        // Another thread: its memo is its own, empty at the start.
        std::thread::spawn(|| {
            let first = fingerprint(b"Bearer sk_held");
            let held = LAST.with(|last| last.borrow().fingerprint);
            assert_eq!(held, Some(first));
            // What is held answers: change it behind the memo's back and
            // the next call for the same bytes returns the held value.
            let planted = Fingerprint::of(b"planted");
            LAST.with(|last| last.borrow_mut().fingerprint = Some(planted));
            assert_eq!(fingerprint(b"Bearer sk_held"), planted);
        })
        .join()
        .unwrap();
    }
}
