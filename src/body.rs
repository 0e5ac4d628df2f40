//! The body every answer is sent with: one shared buffer, or a stored body's two parts.
//!
//! A cached body is held in two allocations (see [`crate::cache::stored_body`]), and
//! a HIT sends both without copying them together: hyper writes a body's
//! chunks with one vectored write on HTTP/1.1 and frames them as usual on
//! HTTP/2. Every other answer is a single buffer with an empty second part.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use http_body_util::Full;

/// What every route answers with.
pub type ResponseBody = Full<BodyBuf>;

/// A body in up to two shared buffers, sent back to back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyBuf {
    head: Bytes,
    tail: Bytes,
}

impl BodyBuf {
    /// `head` followed by `tail`.
    pub fn from_parts(head: Bytes, tail: Bytes) -> BodyBuf {
        BodyBuf { head, tail }
    }
}

impl From<Bytes> for BodyBuf {
    fn from(head: Bytes) -> BodyBuf {
        BodyBuf {
            head,
            tail: Bytes::new(),
        }
    }
}

impl From<String> for BodyBuf {
    fn from(text: String) -> BodyBuf {
        BodyBuf::from(Bytes::from(text))
    }
}

impl From<&'static [u8]> for BodyBuf {
    fn from(bytes: &'static [u8]) -> BodyBuf {
        BodyBuf::from(Bytes::from_static(bytes))
    }
}

impl Buf for BodyBuf {
    fn remaining(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    fn chunk(&self) -> &[u8] {
        if self.head.is_empty() {
            &self.tail
        } else {
            &self.head
        }
    }

    fn advance(&mut self, count: usize) {
        let from_head = count.min(self.head.len());
        self.head.advance(from_head);
        self.tail.advance(count - from_head);
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for part in [&self.head, &self.tail] {
            if filled == slices.len() {
                break;
            }
            if !part.is_empty() {
                slices[filled] = IoSlice::new(part);
                filled += 1;
            }
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_parts() -> BodyBuf {
        BodyBuf::from_parts(Bytes::from_static(b"hello "), Bytes::from_static(b"world"))
    }

    #[test]
    fn both_parts_are_read_in_order_across_the_seam() {
        let mut body = two_parts();
        assert_eq!(body.remaining(), 11);
        assert_eq!(body.chunk(), b"hello ");
        body.advance(4);
        assert_eq!(body.chunk(), b"o ");
        body.advance(3);
        assert_eq!(body.chunk(), b"orld");
        assert_eq!(body.copy_to_bytes(4), Bytes::from_static(b"orld"));
        assert!(!body.has_remaining());
    }

    #[test]
    fn a_vectored_write_gets_every_non_empty_part() {
        let body = two_parts();
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(body.chunks_vectored(&mut slices), 2);
        assert_eq!(&*slices[1], b"world");
        let mut one = [IoSlice::new(&[])];
        assert_eq!(
            body.chunks_vectored(&mut one),
            1,
            "never past the room given"
        );
        let single = BodyBuf::from(Bytes::from_static(b"x"));
        assert_eq!(single.chunks_vectored(&mut slices), 1);
        assert_eq!(BodyBuf::default().chunks_vectored(&mut slices), 0);
    }
}
