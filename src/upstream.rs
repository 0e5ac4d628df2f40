//! The upstream client: a pooled HTTP(S) client, requests built for the cached route, bounded reads.
//!
//! Every exchange is bounded three ways: `upstream.max_concurrency` requests
//! in flight, `upstream.timeout` for the whole exchange (waiting for a slot,
//! connecting, the head and the whole body; passed per call, as it can change
//! on reload), and `upstream.max_body` bytes.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;
use tokio::sync::Semaphore;

use crate::body::ResponseBody;
use crate::config::UpstreamSettings;
use crate::domain::{ConversationId, Flags};
use crate::hop_by_hop;
use crate::metrics::{Metrics, UpstreamFault};
use crate::trace_context::UpstreamIds;

/// Why a request could not be answered by the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached (connect refused, DNS, TLS).
    #[error("upstream unreachable")]
    Unavailable,
    /// No whole answer arrived within `upstream.timeout`.
    #[error("upstream timed out")]
    Timeout,
    /// The body was larger than `upstream.max_body`.
    #[error("upstream response too large")]
    TooLarge,
    /// The answer could not be read whole (cut short, malformed head or framing).
    #[error("upstream answered with an unreadable response")]
    BadResponse,
}

impl UpstreamError {
    /// Every kind, for metrics.
    pub const ALL: [UpstreamError; 4] = [
        UpstreamError::Unavailable,
        UpstreamError::Timeout,
        UpstreamError::TooLarge,
        UpstreamError::BadResponse,
    ];

    /// How its series label it.
    pub fn fault(self) -> UpstreamFault {
        UpstreamFault {
            kind: self.as_str(),
            timed_out: self == UpstreamError::Timeout,
        }
    }

    /// The short name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Unavailable => "unavailable",
            UpstreamError::Timeout => "timeout",
            UpstreamError::TooLarge => "too_large",
            UpstreamError::BadResponse => "bad_response",
        }
    }
}

/// The body type of requests sent upstream.
pub(crate) type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// The `user-agent` the proxy sends on the cached route.
const USER_AGENT: &str = concat!("ayra-cache/", env!("CARGO_PKG_VERSION"));

/// A whole upstream answer, read under the limits.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamResponse {
    pub(crate) status: StatusCode,
    /// The upstream's headers, hop-by-hop ones removed.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Local wall-clock time the answer was read whole.
    pub(crate) received_at: SystemTime,
    /// The same moment on the monotonic clock.
    pub(crate) received_instant: Instant,
    /// Time the exchange took, waiting for a slot included.
    pub(crate) elapsed: Duration,
}

impl UpstreamResponse {
    /// The answer as the client gets it: status, headers (hop-by-hop ones
    /// already gone) and body, as received.
    pub(crate) fn to_response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// One connection pool.
type PooledClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The client every upstream request goes through.
pub struct Upstream {
    /// One pool per thread, like nginx's per-worker keepalive pools: a
    /// worker's upstream connections are driven by the worker itself, so a
    /// MISS wakes no other thread on its way.
    clients: ThreadLocal<PooledClient>,
    connector: HttpsConnector<HttpConnector>,
    pool_idle_timeout: Duration,
    base_url: String,
    max_body: u64,
    slots: Semaphore,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// A client for the configured upstream.
    pub(crate) fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Upstream {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Upstream {
            clients: ThreadLocal::new(),
            connector,
            pool_idle_timeout: settings.pool_idle_timeout,
            base_url: settings.base_url.clone(),
            max_body: settings.max_body,
            slots: Semaphore::new(settings.max_concurrency),
            metrics,
        }
    }

    /// This thread's pool, made on its first upstream request.
    fn client(&self) -> &PooledClient {
        self.clients.get_or(|| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(self.pool_idle_timeout)
                .build(self.connector.clone())
        })
    }

    /// The configured base URL, without a trailing `/`.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET {base_url}/v1/conversations/{id}` with every flag written out,
    /// the credential, the request's `ids` (its request id and trace, with a
    /// span of this call's own), and the proxy's own `accept` and
    /// `user-agent`: nothing of the client's request travels but what is
    /// passed here.
    pub(crate) async fn get_conversation(
        &self,
        id: &ConversationId,
        flags: Flags,
        credential: Option<&HeaderValue>,
        ids: &UpstreamIds,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let uri = format!(
            "{}/v1/conversations/{}?{}",
            self.base_url,
            id.as_str(),
            flags.upstream_query()
        );
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(credential) = credential {
            headers.insert(header::AUTHORIZATION, credential.clone());
        }
        ids.write(&mut headers);
        let build = || {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(&uri)
                .body(Empty::new().map_err(|never| match never {}).boxed())
                .ok()?;
            *request.headers_mut() = headers.clone();
            Some(request)
        };
        // A GET without a body may go twice: see `exchange`.
        self.exchange(build, timeout).await
    }

    /// Sends a request and reads the whole answer, under every bound;
    /// `timeout` covers all of it. Sent once: its body cannot be replayed.
    pub(crate) async fn send(
        &self,
        request: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut once = Some(request);
        self.exchange(move || once.take(), timeout).await
    }

    /// Sends the request `next` gives and reads the whole answer. When a
    /// pooled connection turns out to have been closed by the upstream as the
    /// request went out (no answer at all), `next` is asked once more and, if
    /// it gives a request (idempotent ones do), that goes on a fresh connection.
    async fn exchange(
        &self,
        mut next: impl FnMut() -> Option<Request<UpstreamBody>> + Send,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = Instant::now();
        let exchange = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| UpstreamError::Unavailable)?;
            let request = next().ok_or(UpstreamError::BadResponse)?;
            let mut sent = self.client().request(request).await;
            if sent.as_ref().is_err_and(closed_unanswered) {
                if let Some(again) = next() {
                    sent = self.client().request(again).await;
                }
            }
            let response = sent.map_err(classify)?;
            let (mut parts, body) = response.into_parts();
            if declared_length(&parts.headers).is_some_and(|len| len > self.max_body) {
                return Err(UpstreamError::TooLarge);
            }
            let body = read_limited(body, self.max_body).await?;
            hop_by_hop::strip(&mut parts.headers);
            Ok((parts.status, parts.headers, body))
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let elapsed = started.elapsed();
        let fault = result.as_ref().err().map(|error| error.fault());
        self.metrics.upstream(elapsed, fault);
        let (status, headers, body) = result?;
        Ok(UpstreamResponse {
            status,
            headers,
            body,
            received_at: SystemTime::now(),
            received_instant: Instant::now(),
            elapsed,
        })
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn read_limited(body: hyper::body::Incoming, max_body: u64) -> Result<Bytes, UpstreamError> {
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(UpstreamError::TooLarge)
        }
        Err(_) => Err(UpstreamError::BadResponse),
    }
}

/// The connection closed before any answer came: typically a pooled
/// connection the upstream closed while idle, just as it was reused.
fn closed_unanswered(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
            if matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// Sorts a client error: could not connect, or connected and got nonsense.
fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    if error.is_connect() {
        return UpstreamError::Unavailable;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_timeout() {
                return UpstreamError::Timeout;
            }
        }
        source = cause.source();
    }
    UpstreamError::BadResponse
}
