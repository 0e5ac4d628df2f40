//! What the cache did for a request, as `x-cache` and an RFC 9211 `cache-status` header.

use bytes::Bytes;
use http::HeaderValue;

use super::seconds;

/// The cache's part in one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from a stored entry.
    Hit,
    /// Fetched from upstream (stored or not).
    Miss,
    /// Forwarded without looking at the cache.
    Bypass,
    /// A stale entry stood in for a failing upstream.
    Stale,
}

impl CacheResult {
    /// The `x-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Bypass => "BYPASS",
            CacheResult::Stale => "STALE",
        }
    }

    /// The low-cardinality name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
            CacheResult::Stale => "stale",
        }
    }
}

/// Everything `cache-status` says about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    pub result: CacheResult,
    /// Fresh seconds left (hits).
    pub ttl: Option<u64>,
    /// Joined another request's upstream exchange.
    pub collapsed: bool,
    /// The answer was stored.
    pub stored: bool,
    /// A stale entry was held: the request went upstream to revalidate it.
    pub revalidated: bool,
    /// A HIT started a background refresh of its entry.
    pub refreshing: bool,
    /// The upstream's status, when it is not a plain 200.
    pub fwd_status: Option<u16>,
    /// Why the answer was not stored or the cache was bypassed.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// A status for `result` with nothing else to say yet.
    pub fn new(result: CacheResult) -> CacheStatus {
        CacheStatus {
            result,
            ttl: None,
            collapsed: false,
            stored: false,
            revalidated: false,
            refreshing: false,
            fwd_status: None,
            detail: None,
        }
    }

    /// The `cache-status` header value. Written into one buffer of the
    /// right size, numbers by `itoa`: on a HIT this runs for every request,
    /// and `format!` cost it about six times as many instructions.
    pub fn header_value(&self) -> HeaderValue {
        if let Some(value) = self.plain_hit_value() {
            return value;
        }
        let result = match self.result {
            CacheResult::Hit => "; hit",
            CacheResult::Miss if self.revalidated => "; fwd=stale",
            CacheResult::Miss => "; fwd=miss",
            CacheResult::Stale => "; fwd=stale",
            CacheResult::Bypass => "; fwd=bypass",
        };
        let (mut ttl_digits, mut status_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let ttl = self.ttl.map(|ttl| ttl_digits.format(ttl));
        let status = self.fwd_status.map(|code| status_digits.format(code));
        let parts: [(&str, Option<&str>); 6] = [
            (result, Some("")),
            ("; ttl=", ttl),
            ("; fwd-status=", status),
            ("; collapsed", self.collapsed.then_some("")),
            ("; stored", self.stored.then_some("")),
            ("; detail=", self.detail),
        ];
        let len = parts
            .iter()
            .filter_map(|(name, value)| value.map(|value| name.len() + value.len()))
            .sum::<usize>();
        let mut text = Vec::with_capacity(PRODUCT.len() + len);
        text.extend_from_slice(PRODUCT.as_bytes());
        for (name, value) in parts {
            if let Some(value) = value {
                text.extend_from_slice(name.as_bytes());
                text.extend_from_slice(value.as_bytes());
            }
        }
        HeaderValue::from_maybe_shared(Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static(PRODUCT))
    }

    /// A plain HIT's value (its `ttl` and nothing else to say), made once.
    fn plain_hit_value(&self) -> Option<HeaderValue> {
        match *self {
            CacheStatus {
                result: CacheResult::Hit,
                ttl: Some(ttl),
                collapsed: false,
                stored: false,
                revalidated: false,
                refreshing: _,
                fwd_status: None,
                detail: None,
            } => seconds::plain_hit_status(ttl),
            _ => None,
        }
    }
}

/// The cache's name in `cache-status` (RFC 9211).
const PRODUCT: &str = "ayra-cache";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_with_more_to_say_or_past_the_tabled_ttls_is_formatted() {
        let hit = |ttl| CacheStatus {
            ttl: Some(ttl),
            ..CacheStatus::new(CacheResult::Hit)
        };
        let shared = CacheStatus {
            detail: Some("shared"),
            ..hit(42)
        };
        assert_eq!(
            shared.header_value(),
            "ayra-cache; hit; ttl=42; detail=shared"
        );
        let collapsed = CacheStatus {
            collapsed: true,
            ..hit(42)
        };
        assert_eq!(
            collapsed.header_value(),
            "ayra-cache; hit; ttl=42; collapsed"
        );
        assert_eq!(hit(86_400).header_value(), "ayra-cache; hit; ttl=86400");
        let refreshing = CacheStatus {
            refreshing: true,
            ..hit(7)
        };
        assert_eq!(refreshing.header_value(), "ayra-cache; hit; ttl=7");
    }

    #[test]
    fn statuses_render_as_rfc_9211_parameters() {
        let hit = CacheStatus {
            ttl: Some(42),
            ..CacheStatus::new(CacheResult::Hit)
        };
        assert_eq!(hit.header_value(), "ayra-cache; hit; ttl=42");
        let stored = CacheStatus {
            stored: true,
            ..CacheStatus::new(CacheResult::Miss)
        };
        assert_eq!(stored.header_value(), "ayra-cache; fwd=miss; stored");
        let refused = CacheStatus {
            collapsed: true,
            fwd_status: Some(404),
            detail: Some("status"),
            ..CacheStatus::new(CacheResult::Miss)
        };
        assert_eq!(
            refused.header_value(),
            "ayra-cache; fwd=miss; fwd-status=404; collapsed; detail=status"
        );
        let bypass = CacheStatus::new(CacheResult::Bypass);
        assert_eq!(bypass.header_value(), "ayra-cache; fwd=bypass");
        let stale = CacheStatus {
            fwd_status: Some(503),
            detail: Some("stale-if-error"),
            ..CacheStatus::new(CacheResult::Stale)
        };
        assert_eq!(
            stale.header_value(),
            "ayra-cache; fwd=stale; fwd-status=503; detail=stale-if-error"
        );
        let revalidated = CacheStatus {
            revalidated: true,
            stored: true,
            ..CacheStatus::new(CacheResult::Miss)
        };
        assert_eq!(revalidated.header_value(), "ayra-cache; fwd=stale; stored");
    }
}
