//! Pauses: how long an upstream `429` stops a credential, and the `retry-after` the proxy sends itself; pure.

use std::time::{Duration, Instant, SystemTime};

use http::header::{DATE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

/// A pause when the `429` names no time (or an unreadable one).
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// No `429` pauses a credential longer than this.
pub const MAX_PAUSE: Duration = Duration::from_secs(5 * 60);

/// A `retry-after` value (RFC 9110 section 10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `delay-seconds`.
    Seconds(u64),
    /// An HTTP-date.
    At(SystemTime),
}

impl RetryAfter {
    /// The value, when it is one of the two forms.
    pub fn parse(value: &HeaderValue) -> Option<RetryAfter> {
        let text = value.to_str().ok()?.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits to fit is still "a long time".
            return Some(RetryAfter::Seconds(text.parse().unwrap_or(u64::MAX)));
        }
        httpdate::parse_http_date(text).ok().map(RetryAfter::At)
    }

    /// The wait this value asks for, a date read against `reference`.
    fn delay(self, reference: SystemTime) -> Duration {
        match self {
            RetryAfter::Seconds(seconds) => Duration::from_secs(seconds),
            // A date in the past asks for no wait at all.
            RetryAfter::At(at) => at.duration_since(reference).unwrap_or(Duration::ZERO),
        }
    }
}

/// How long an upstream `429` with these headers pauses its credential:
/// its `retry-after` (the first one); a date is read against the
/// upstream's own `Date` when it sent one (its clock wrote both, so skew
/// cancels), else against `now_wall`. Without a readable value 1 s; at most
/// 5 minutes.
pub fn pause_length(headers: &HeaderMap, now_wall: SystemTime) -> Duration {
    let Some(retry_after) = headers.get(RETRY_AFTER).and_then(RetryAfter::parse) else {
        return DEFAULT_PAUSE;
    };
    let reference = headers
        .get(DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date).ok())
        .unwrap_or(now_wall);
    retry_after.delay(reference).min(MAX_PAUSE)
}

/// A credential's pause: an end that a later `429` may extend, never shorten.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pause {
    until: Option<Instant>,
}

impl Pause {
    /// Pauses until `until`, unless already paused longer; says whether the end moved.
    pub fn extend(&mut self, until: Instant) -> bool {
        if self.until.is_some_and(|current| current >= until) {
            return false;
        }
        self.until = Some(until);
        true
    }

    /// The end of the pause, while it lasts.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|until| *until > now)
    }
}

/// The `retry-after` the proxy sends: whole seconds from `now` until
/// `turn_at`, rounded up, at least 1.
pub fn retry_after_secs(turn_at: Instant, now: Instant) -> u64 {
    let wait = turn_at.saturating_duration_since(now);
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn wall(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(wall(secs))
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn seconds_are_read_as_a_delay() {
        let h = headers(&[(&RETRY_AFTER, "2")]);
        assert_eq!(pause_length(&h, wall(NOW)), Duration::from_secs(2));
        let zero = headers(&[(&RETRY_AFTER, "0")]);
        assert_eq!(pause_length(&zero, wall(NOW)), Duration::ZERO);
    }

    #[test]
    fn a_date_is_read_against_the_upstream_date_when_there_is_one() {
        let at = date(NOW + 30);
        let alone = headers(&[(&RETRY_AFTER, &at)]);
        assert_eq!(pause_length(&alone, wall(NOW)), Duration::from_secs(30));
        // The upstream's clock runs 100 s ahead of ours: its Date says so.
        let skewed_at = date(NOW + 100 + 7);
        let upstream_now = date(NOW + 100);
        let skewed = headers(&[(&RETRY_AFTER, &skewed_at), (&DATE, &upstream_now)]);
        assert_eq!(pause_length(&skewed, wall(NOW)), Duration::from_secs(7));
        let past = headers(&[(&RETRY_AFTER, &date(NOW - 5))]);
        assert_eq!(pause_length(&past, wall(NOW)), Duration::ZERO);
    }

    #[test]
    fn no_value_or_an_unreadable_one_pauses_one_second() {
        for h in [
            headers(&[]),
            headers(&[(&RETRY_AFTER, "soon")]),
            headers(&[(&RETRY_AFTER, "-3")]),
            headers(&[(&RETRY_AFTER, "+3")]),
            headers(&[(&RETRY_AFTER, "1.5")]),
            headers(&[(&RETRY_AFTER, "")]),
        ] {
            assert_eq!(pause_length(&h, wall(NOW)), DEFAULT_PAUSE, "{h:?}");
        }
    }

    #[test]
    fn a_pause_is_capped_at_five_minutes() {
        for value in ["301", "86400", "99999999999999999999999"] {
            let h = headers(&[(&RETRY_AFTER, value)]);
            assert_eq!(pause_length(&h, wall(NOW)), MAX_PAUSE, "{value}");
        }
        let far = headers(&[(&RETRY_AFTER, &date(NOW + 3600))]);
        assert_eq!(pause_length(&far, wall(NOW)), MAX_PAUSE);
    }

    #[test]
    fn a_later_429_extends_a_pause_but_never_shortens_it() {
        let t0 = Instant::now();
        let mut pause = Pause::default();
        assert_eq!(pause.until(t0), None);
        assert!(pause.extend(t0 + Duration::from_secs(5)));
        assert!(!pause.extend(t0 + Duration::from_secs(2)));
        assert_eq!(pause.until(t0), Some(t0 + Duration::from_secs(5)));
        assert!(pause.extend(t0 + Duration::from_secs(9)));
        assert_eq!(pause.until(t0), Some(t0 + Duration::from_secs(9)));
        assert_eq!(pause.until(t0 + Duration::from_secs(9)), None, "over");
    }

    #[test]
    fn the_proxys_retry_after_is_whole_seconds_rounded_up_at_least_one() {
        let t0 = Instant::now();
        assert_eq!(retry_after_secs(t0, t0), 1);
        assert_eq!(retry_after_secs(t0 + Duration::from_millis(10), t0), 1);
        assert_eq!(retry_after_secs(t0 + Duration::from_secs(2), t0), 2);
        assert_eq!(retry_after_secs(t0 + Duration::from_millis(2001), t0), 3);
        assert_eq!(retry_after_secs(t0, t0 + Duration::from_secs(3)), 1);
    }
}
