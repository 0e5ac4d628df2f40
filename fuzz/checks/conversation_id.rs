//! The id check, path classification and the pass-through dot-segment check
//! over arbitrary paths.
//!
//! Checks: no panic; an id is accepted exactly when it matches
//! `[A-Za-z0-9_-]{1,128}` as written, and then routes to the cached route
//! with the same text; every path gets one route; a path passed as
//! forwardable has no segment that decodes to `.` or `..`.

use ayra_cache::domain::ConversationId;
use ayra_cache::error::ProxyError;
use ayra_cache::route::{check_forwardable, classify, Route};

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let well_formed = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match ConversationId::parse(text) {
        Ok(id) => {
            assert!(well_formed, "accepted {text:?}");
            assert_eq!(id.as_str(), text);
            let path = format!("/v1/conversations/{text}");
            assert_eq!(classify(&path), Route::Conversation(text));
        }
        Err(error) => {
            assert!(!well_formed, "refused {text:?}");
            assert_eq!(ProxyError::from(error), ProxyError::InvalidConversationId);
        }
    }

    match classify(text) {
        Route::Health => assert_eq!(text, "/healthz"),
        Route::Conversation(id) => {
            assert_eq!(format!("/v1/conversations/{id}"), text);
        }
        Route::PassThrough => assert!(text.starts_with("/v1/")),
        Route::NotFound => assert!(text != "/healthz" && !text.starts_with("/v1/")),
    }

    if check_forwardable(text).is_ok() {
        for segment in text.split('/') {
            let decoded = super::common::percent_decode(segment);
            assert!(decoded != "." && decoded != "..", "forwarded {text:?}");
        }
    }
}
