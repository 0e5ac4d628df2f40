//! The proxy's own errors and their one mapping to a status and the API's error shape.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;
use crate::domain::InvalidConversationId;
use crate::upstream::UpstreamError;

/// Why a client's request could not be read: the client's fault, a 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A request head with a line ending in a bare LF instead of CRLF.
    #[error("request head line ends in a bare LF")]
    BareLineFeed,
    /// A forwarded request's body is unreadable (bad chunked framing, cut short).
    #[error("unreadable request body")]
    UnreadableBody,
    /// A forwarded request's body is larger than `server.max_request_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// A forwarded request's body did not arrive whole within `server.header_read_timeout`.
    #[error("request body too slow")]
    BodyTimeout,
}

/// Everything the proxy itself answers with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the path.
    #[error("no such route")]
    NotFound,
    /// The `{id}` of a conversation path is not `[A-Za-z0-9_-]{1,128}`.
    #[error("invalid conversation id")]
    InvalidConversationId,
    /// A path under `/v1/` that cannot be forwarded unambiguously (dot segments).
    #[error("invalid path")]
    InvalidPath,
    /// The request target is longer than the proxy accepts.
    #[error("request target too long")]
    UriTooLong,
    /// More than one `Authorization` header.
    #[error("ambiguous credentials")]
    AmbiguousAuthorization,
    /// A client token was required and was missing or unknown.
    #[error("client authentication failed")]
    Unauthenticated,
    /// An admin route without a valid admin token.
    #[error("admin authentication failed")]
    AdminUnauthenticated,
    /// An admin route while no `admin.token_sha256` is configured.
    #[error("admin routes are disabled")]
    AdminDisabled,
    /// A known path with a method it does not answer.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client's request could not be read.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The upstream exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream budget gave the call no turn within `max_wait` (or the
    /// upstream's `429` paused its credential): whole seconds until a turn
    /// could come, sent as `retry-after`.
    #[error("upstream budget exhausted")]
    BudgetExhausted { retry_after_secs: u64 },
    /// A bug or an unexpected failure inside the proxy.
    #[error("internal error")]
    Internal,
}

impl From<InvalidConversationId> for ProxyError {
    fn from(_: InvalidConversationId) -> Self {
        ProxyError::InvalidConversationId
    }
}

/// How an error is shown to the client.
struct ErrorShape {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: &'static str,
}

impl ProxyError {
    fn shape(&self) -> ErrorShape {
        use ProxyError as E;
        let (status, kind, code, message) = match self {
            E::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "route_not_found",
                "No such route on this proxy",
            ),
            E::InvalidConversationId => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_conversation_id",
                "Conversation ids are 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
            ),
            E::InvalidPath => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_path",
                "The path contains dot segments and cannot be forwarded",
            ),
            E::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "invalid_request_error",
                "uri_too_long",
                "The request target is longer than 8 KiB",
            ),
            E::AmbiguousAuthorization => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "multiple_authorization_headers",
                "Send exactly one Authorization header",
            ),
            E::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_client_token",
                "A valid bearer token for this proxy is required",
            ),
            E::AdminUnauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
                "A valid admin bearer token is required",
            ),
            E::AdminDisabled => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "admin_disabled",
                "Admin routes are disabled: set admin.token_sha256",
            ),
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "This path does not answer that method",
            ),
            E::Client(ClientError::BareLineFeed) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_line_ending",
                "Every line of a request head must end with CRLF, not a bare LF",
            ),
            E::Client(ClientError::UnreadableBody) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request_body",
                "The request body could not be read (malformed chunked framing or cut short)",
            ),
            E::Client(ClientError::BodyTooLarge) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_body_too_large",
                "The request body is larger than this proxy accepts",
            ),
            E::Client(ClientError::BodyTimeout) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_body_timeout",
                "The request body did not arrive in time",
            ),
            E::Upstream(UpstreamError::Unavailable) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unavailable",
                "The Ayra API could not be reached",
            ),
            E::Upstream(UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
                "The Ayra API did not answer in time",
            ),
            E::Upstream(UpstreamError::TooLarge) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_response_too_large",
                "The Ayra API answered with a body larger than this proxy accepts",
            ),
            E::Upstream(UpstreamError::BadResponse) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_bad_response",
                "The Ayra API answered with a response that could not be read",
            ),
            E::BudgetExhausted { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_budget_exhausted",
                "The proxy's budget of upstream calls for this API key has no turn for this \
                 request now; retry after the seconds in retry-after",
            ),
            E::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
                "The proxy failed to answer this request",
            ),
        };
        ErrorShape {
            status,
            kind,
            code,
            message,
        }
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.shape().status
    }

    /// The `error.code` this error is answered with (also logged).
    pub fn code(&self) -> &'static str {
        self.shape().code
    }

    /// The response: the status and `{"error": {"type", "message", "code"}}`,
    /// with `retry-after` when there is a time to retry after.
    pub fn into_response(self) -> Response<ResponseBody> {
        let shape = self.shape();
        let mut response = error_response(shape.status, shape.kind, shape.code, shape.message);
        if let ProxyError::BudgetExhausted { retry_after_secs } = self {
            let seconds = HeaderValue::from(retry_after_secs.max(1));
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// A response in the API's error shape.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "error": { "type": kind, "message": message, "code": code }
    });
    let mut response = Response::new(ResponseBody::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_has_the_api_shape() {
        let response = ProxyError::InvalidConversationId.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "invalid_conversation_id");
        assert!(json["error"]["message"].is_string());
    }

    #[tokio::test]
    async fn a_budget_refusal_is_a_429_with_whole_seconds_to_retry_after() {
        let response = ProxyError::BudgetExhausted {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["type"], "rate_limit_error");
        assert_eq!(json["error"]["code"], "upstream_budget_exhausted");
        let never_zero = ProxyError::BudgetExhausted {
            retry_after_secs: 0,
        };
        assert_eq!(
            never_zero.into_response().headers()[header::RETRY_AFTER],
            "1"
        );
    }

    #[test]
    fn client_faults_map_to_4xx() {
        let status = |e: ClientError| ProxyError::from(e).status();
        assert_eq!(status(ClientError::BareLineFeed), StatusCode::BAD_REQUEST);
        assert_eq!(status(ClientError::UnreadableBody), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(ClientError::BodyTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(ClientError::BodyTimeout),
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[test]
    fn upstream_faults_map_to_502_and_504() {
        let status = |e: UpstreamError| ProxyError::from(e).status();
        assert_eq!(status(UpstreamError::Unavailable), StatusCode::BAD_GATEWAY);
        assert_eq!(status(UpstreamError::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status(UpstreamError::TooLarge), StatusCode::BAD_GATEWAY);
        assert_eq!(status(UpstreamError::BadResponse), StatusCode::BAD_GATEWAY);
    }
}
