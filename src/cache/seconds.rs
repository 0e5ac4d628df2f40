//! Header values that carry whole seconds (`age`, a plain HIT's `cache-status`), made once for the first hour.
//!
//! Every HIT writes an `age` and a `cache-status` with its `ttl`. Formatted
//! per request, each costs a number's formatting, a check of its bytes and
//! an allocation (with its free): about 350 instructions a HIT together,
//! measured. Made once, a HIT clones a static value instead, which touches
//! no reference count. Numbers past the table are formatted as before.

use std::sync::LazyLock;

use http::HeaderValue;

/// The largest number of seconds the tables hold: an hour, `cache.max_ttl`'s
/// default, so a plain HIT's `ttl` and most `age`s are in them.
const TABLED: u64 = 3600;

/// `cache-status` of a plain HIT, up to its `ttl`.
const HIT_PREFIX: &str = "ayra-cache; hit; ttl=";

/// `0` to `TABLED`, as `age` values.
static AGES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| table(""));

/// `ayra-cache; hit; ttl=0` to `ayra-cache; hit; ttl=TABLED`.
static HIT_STATUSES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| table(HIT_PREFIX));

/// `prefix` followed by each number from 0 to `TABLED`, in one text made
/// (and kept) once, each value a static slice of it.
fn table(prefix: &str) -> Box<[HeaderValue]> {
    let mut text = String::new();
    let mut ends = Vec::with_capacity(TABLED as usize + 1);
    for seconds in 0..=TABLED {
        text.push_str(prefix);
        text.push_str(itoa::Buffer::new().format(seconds));
        ends.push(text.len());
    }
    let text: &'static str = Box::leak(text.into_boxed_str());
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let value = HeaderValue::from_static(&text[start..end]);
            start = end;
            value
        })
        .collect()
}

/// The `age` value for `seconds`.
pub fn age(seconds: u64) -> HeaderValue {
    match AGES.get(index(seconds)) {
        Some(value) => value.clone(),
        None => HeaderValue::from(seconds),
    }
}

/// A plain HIT's `cache-status` (`ayra-cache; hit; ttl=N`), when `ttl` is
/// in the table; `None` past it.
pub fn plain_hit_status(ttl: u64) -> Option<HeaderValue> {
    HIT_STATUSES.get(index(ttl)).cloned()
}

/// `seconds` as an index into a table; past any table when it does not fit.
fn index(seconds: u64) -> usize {
    usize::try_from(seconds).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prefix` and `seconds`, formatted.
    fn formatted(prefix: &str, seconds: u64) -> HeaderValue {
        HeaderValue::from_str(&format!("{prefix}{seconds}")).unwrap()
    }

    #[test]
    fn every_tabled_value_reads_as_its_number() {
        for seconds in 0..=TABLED {
            assert_eq!(age(seconds), formatted("", seconds));
            assert_eq!(
                plain_hit_status(seconds).unwrap(),
                formatted(HIT_PREFIX, seconds)
            );
        }
    }

    #[test]
    fn numbers_past_the_table_are_formatted() {
        for seconds in [TABLED + 1, 86_400, 1 << 31, u64::MAX] {
            assert_eq!(age(seconds), formatted("", seconds));
            assert_eq!(plain_hit_status(seconds), None);
        }
    }

    #[test]
    fn a_tabled_value_is_static() {
        // A static value's clone shares its bytes' address and writes no count.
        let first = age(42);
        let second = age(42);
        assert_eq!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        let status = plain_hit_status(42).unwrap();
        assert_eq!(
            status.as_bytes().as_ptr(),
            plain_hit_status(42).unwrap().as_bytes().as_ptr()
        );
    }
}
