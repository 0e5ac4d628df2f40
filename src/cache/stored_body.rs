//! A stored body, copied into two allocations that fit the allocator's size classes.
//!
//! jemalloc (the global allocator, see `main.rs`) rounds every request up to
//! a size class, four classes per doubling: a 6,300-byte body held whole
//! takes 7,168 bytes. Measured with 50,000 bodies of about 6 KB, that
//! rounding alone was 780 bytes an entry, 13 % of what was cached. A stored
//! body is therefore held as a head whose length is exactly a size class
//! (the largest not over the body) and a tail of the rest, under a quarter
//! of the body, whose own rounding is a few bytes. Above 14 KiB jemalloc
//! rounds to whole pages, and a head of the same rule is a whole number of
//! pages. Both parts are sent with one vectored write (see [`crate::body`]).

use bytes::Bytes;

use crate::body::BodyBuf;

/// Bodies shorter than this are held whole: the second allocation (and the
/// shared counter each part gets when first served) would cost about what
/// the rounding wastes.
const MIN_SPLIT_LEN: usize = 1024;

/// A cached body in two parts; cloning it shares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredBody {
    head: Bytes,
    tail: Bytes,
}

impl StoredBody {
    /// A copy of `body` in parts that fit their allocations.
    pub fn copy_from(body: &[u8]) -> StoredBody {
        let (head, tail) = body.split_at(head_len(body.len()));
        StoredBody {
            head: Bytes::copy_from_slice(head),
            tail: Bytes::copy_from_slice(tail),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its parts in order, for reading it through without joining them.
    pub(crate) fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.tail]
    }

    /// The body in one piece (a copy).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.tail[..]].concat()
    }

    /// The body to send: both parts, shared.
    pub fn to_buf(&self) -> BodyBuf {
        BodyBuf::from_parts(self.head.clone(), self.tail.clone())
    }
}

/// The largest jemalloc size class not over `len`, or `len` itself when it
/// is short. The classes between `2^k` and `2^(k+1)` are the multiples of
/// `2^(k-2)`, so that is `len` rounded down to a multiple of a quarter of the
/// power of two below it.
fn head_len(len: usize) -> usize {
    if len < MIN_SPLIT_LEN {
        return len;
    }
    let quarter = 1usize << (len.ilog2() - 2);
    len / quarter * quarter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_the_largest_size_class_not_over_the_length() {
        assert_eq!(head_len(6_300), 6_144);
        assert_eq!(head_len(6_144), 6_144, "a class is held whole");
        assert_eq!(head_len(8_191), 7_168);
        assert_eq!(head_len(8_192), 8_192);
        assert_eq!(head_len(4_097), 4_096);
        assert_eq!(head_len(1_500), 1_280);
        assert_eq!(head_len(20_000), 16_384, "whole pages above 14 KiB");
        assert_eq!(head_len(1_000_000), 917_504);
        assert_eq!(head_len(1_000), 1_000, "short bodies are not split");
        assert_eq!(head_len(0), 0);
    }

    #[test]
    fn the_tail_is_under_a_quarter_of_the_body() {
        for len in (MIN_SPLIT_LEN..200_000).step_by(97) {
            let head = head_len(len);
            assert!(head <= len && len - head < len / 4, "{len} -> {head}");
        }
    }

    #[test]
    fn the_parts_hold_the_body_in_order() {
        let body: Vec<u8> = (0..6_300u32).map(|i| (i % 251) as u8).collect();
        let stored = StoredBody::copy_from(&body);
        assert_eq!(stored.len(), body.len());
        assert_eq!(stored.parts()[0].len(), 6_144);
        assert_eq!(stored.to_vec(), body);
        assert_eq!(stored.parts().concat(), body);
        let sent = stored.to_buf();
        assert_eq!(bytes::Buf::remaining(&sent), body.len());
        assert!(StoredBody::copy_from(b"").is_empty());
    }
}
