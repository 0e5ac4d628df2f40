//! Reading a request's ids allocates nothing when they are present (SPEC section 13): counted by this test binary's own global allocator.
//!
//! A binary of its own, so that its allocator counts only what it is asked
//! to: the count is per thread, and only the closure under test runs on
//! the thread between the two reads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ayra_cache::trace_context::{client_request_id, RequestIds, TraceParent};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The system allocator, counting allocations made on each thread.
struct Counting;

thread_local! {
    // A `const` initialiser and no destructor: usable inside the allocator.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; counting touches
// only a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` returns, and how many allocations it made.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let value = std::hint::black_box(f());
    let after = ALLOCATIONS.with(Cell::get);
    (value, after - before)
}

/// A header map as hyper hands it over: every value a slice of the one
/// buffer the head was read into (so a kept value is shared, not copied).
fn parsed(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut buffer = BytesMut::new();
    for (_, value) in pairs {
        buffer.extend_from_slice(value.as_bytes());
    }
    let head: Bytes = buffer.split().freeze();
    let mut map = HeaderMap::with_capacity(pairs.len());
    let mut at = 0;
    for (name, value) in pairs {
        let bytes = head.slice(at..at + value.len());
        at += value.len();
        let value = HeaderValue::from_maybe_shared(bytes).unwrap();
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    }
    map
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn present_ids_are_read_without_allocating() {
    let long = "r".repeat(128);
    let over_long = "r".repeat(129);
    let padded = format!(" \t{TRACEPARENT}\t ");
    let uppercase = TRACEPARENT.to_uppercase();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-request-id", "app-42"), ("traceparent", TRACEPARENT)],
        vec![("x-request-id", &long), ("traceparent", &padded)],
        vec![("x-request-id", "app-42"), ("traceparent", "00-bad")],
        vec![
            ("x-request-id", "app-42"),
            ("traceparent", &uppercase),
            ("accept", "application/json"),
        ],
    ];
    for pairs in &cases {
        let headers = parsed(pairs);
        let (ids, allocations) = allocations_in(|| RequestIds::of(&headers));
        assert_eq!(allocations, 0, "{pairs:?}");
        assert_eq!(ids.request_id, pairs[0].1, "kept, shared with the request");
        let (hex, allocations) = allocations_in(|| {
            ids.trace
                .map(|trace| (trace.trace_id_hex(), trace.parent_id_hex()))
        });
        assert_eq!(allocations, 0, "{pairs:?}");
        if let Some((trace, parent)) = hex {
            assert_eq!(trace.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(parent.as_str(), "00f067aa0ba902b7");
        }
    }
    for refused in [
        parsed(&[("x-request-id", &over_long)]),
        parsed(&[("x-request-id", "has space")]),
        parsed(&[("x-request-id", "one"), ("x-request-id", "two")]),
        parsed(&[("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)]),
    ] {
        let (found, allocations) = allocations_in(|| {
            (
                client_request_id(&refused).is_some(),
                TraceParent::from_headers(&refused).is_some(),
            )
        });
        assert_eq!(found, (false, false), "{refused:?}");
        assert_eq!(allocations, 0, "{refused:?}");
    }
}

#[test]
fn without_a_well_formed_id_the_only_allocation_is_the_generated_one() {
    let absent = parsed(&[("accept", "application/json")]);
    // The random generator's first use on a thread sets it up (once).
    RequestIds::of(&absent);
    let (ids, allocations) = allocations_in(|| RequestIds::of(&absent));
    assert_eq!(ids.trace, None);
    assert_eq!(ids.request_id.len(), 32);
    assert_eq!(allocations, 1, "the generated id's bytes, as before");
}
