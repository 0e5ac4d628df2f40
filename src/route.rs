//! Which route a request path takes, and the conversation id check.

use crate::error::ProxyError;

const CONVERSATIONS: &str = "/v1/conversations/";

/// Where a request goes, decided from its path alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/healthz`, answered locally.
    Health,
    /// `/v1/conversations/{id}`, with the id as written (not yet checked).
    Conversation(&'a str),
    /// Any other path under `/v1/`: forwarded, never cached.
    PassThrough,
    /// Anything else: 404, nothing forwarded.
    NotFound,
}

impl Route<'_> {
    /// The kind of route, for logs and metrics.
    pub(crate) fn kind(&self) -> RouteKind {
        match self {
            Route::Health => RouteKind::Health,
            Route::Conversation(_) => RouteKind::Conversation,
            Route::PassThrough => RouteKind::PassThrough,
            Route::NotFound => RouteKind::Other,
        }
    }
}

/// A route without its data: the `route` label of logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Conversation,
    PassThrough,
    Health,
    Other,
}

impl RouteKind {
    /// The low-cardinality name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteKind::Conversation => "conversation",
            RouteKind::PassThrough => "passthrough",
            RouteKind::Health => "health",
            RouteKind::Other => "other",
        }
    }
}

/// Classifies a request path (without its query).
pub fn classify(path: &str) -> Route<'_> {
    if path == "/healthz" {
        Route::Health
    } else if let Some(id) = path.strip_prefix(CONVERSATIONS) {
        Route::Conversation(id)
    } else if path.starts_with("/v1/") {
        Route::PassThrough
    } else {
        Route::NotFound
    }
}

/// Refuses pass-through paths whose meaning the upstream might change by
/// normalising them: `.` or `..` segments, encoded or not, also behind an
/// encoded slash (`%2F`) or a backslash some servers treat as one.
pub fn check_forwardable(path: &str) -> Result<(), ProxyError> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let dot_segment = decoded
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..");
    if dot_segment {
        Err(ProxyError::InvalidPath)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(classify("/healthz"), Route::Health);
        assert_eq!(
            classify("/v1/conversations/abc"),
            Route::Conversation("abc")
        );
        assert_eq!(
            classify("/v1/conversations/a/b"),
            Route::Conversation("a/b")
        );
        assert_eq!(classify("/v1/conversations/"), Route::Conversation(""));
        assert_eq!(classify("/v1/conversations"), Route::PassThrough);
        assert_eq!(classify("/v1/agents"), Route::PassThrough);
        assert_eq!(classify("/v1"), Route::NotFound);
        assert_eq!(classify("/"), Route::NotFound);
        assert_eq!(classify("/healthz/"), Route::NotFound);
        assert_eq!(classify("/v2/conversations/abc"), Route::NotFound);
    }

    #[test]
    fn dot_segments_are_not_forwarded() {
        assert!(check_forwardable("/v1/agents/a.b").is_ok());
        assert!(check_forwardable("/v1/../admin").is_err());
        assert!(check_forwardable("/v1/./agents").is_err());
        assert!(check_forwardable("/v1/%2e%2E/admin").is_err());
        assert!(check_forwardable("/v1/.%2e").is_err());
        assert!(check_forwardable("/v1/%2e%2e%2fadmin").is_err());
        assert!(check_forwardable("/v1/agents%2F..%2F..%2Fadmin").is_err());
        assert!(check_forwardable("/v1/..%5Cadmin").is_err());
        assert!(check_forwardable("/v1/..\\admin").is_err());
        assert!(check_forwardable("/v1/agents/v1.2").is_ok());
    }
}
