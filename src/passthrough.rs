//! Pass-through: forwards a request upstream as the client sent it, less what must not travel.
//!
//! Method, path, query, body and end-to-end headers travel; hop-by-hop
//! headers do not, `Host` becomes the upstream's, the `Authorization`
//! sent is the request's credential (the proxy's key in proxy-key mode), and
//! `x-request-id`, `traceparent` and `tracestate` are the request's ids as
//! the proxy keeps them (SPEC section 13), in place of the client's own.
//!
//! The body is read whole, under [`BodyLimits`], before an upstream slot is
//! taken: a client trickling its body holds only its own connection, and an
//! unreadable body is the client's 4xx, never an upstream exchange.
//!
//! Then the call takes its turn in its credential's budget (SPEC section
//! 12): one that gets none within `max_wait` is answered `429`
//! `upstream_budget_exhausted` without calling upstream, and an upstream
//! `429` pauses the credential (and reaches the client as received).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};

use crate::access_log::Outcome;
use crate::auth::Credential;
use crate::budget::{Budgets, ExhaustedOutcome};
use crate::config::ServerSettings;
use crate::error::{ClientError, ProxyError};
use crate::hop_by_hop;
use crate::live::Live;
use crate::spending::{Refused, Spender};
use crate::trace_context::RequestIds;
use crate::upstream::{Upstream, UpstreamBody};

/// The bounds on reading a forwarded request's body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `server.max_request_body`: past it, 413.
    pub max_bytes: u64,
    /// `server.header_read_timeout`: the whole body must arrive within it, else 408.
    pub read_timeout: Duration,
}

impl From<&ServerSettings> for BodyLimits {
    fn from(server: &ServerSettings) -> Self {
        BodyLimits {
            max_bytes: server.max_request_body,
            read_timeout: server.header_read_timeout,
        }
    }
}

/// The pass-through route: the upstream client, the budgets its calls
/// spend, and the bounds on reading a forwarded body.
#[derive(Clone)]
pub struct PassThrough {
    upstream: Arc<Upstream>,
    budgets: Arc<Budgets>,
    body_limits: BodyLimits,
}

impl PassThrough {
    pub fn new(
        upstream: Arc<Upstream>,
        budgets: Arc<Budgets>,
        body_limits: BodyLimits,
    ) -> PassThrough {
        PassThrough {
            upstream,
            budgets,
            body_limits,
        }
    }

    /// Forwards `request`, carrying its `ids`, once its turn in the budget
    /// comes, and answers with whatever the upstream said, and how long it
    /// took (and waited). Never cached.
    pub(crate) async fn forward(
        &self,
        live: &Live,
        request: Request<Incoming>,
        credential: &Credential,
        ids: &RequestIds,
    ) -> Outcome {
        let outgoing = match self.outgoing(request, credential, ids).await {
            Ok(outgoing) => outgoing,
            Err(error) => return Outcome::failed(error),
        };
        let spender = Spender::for_request(&self.budgets, credential);
        let turn = spender.client_turn().await;
        let answered = match turn.go {
            Err(Refused { retry_after_secs }) => {
                self.budgets.exhausted(ExhaustedOutcome::Rejected);
                Outcome::failed(ProxyError::BudgetExhausted { retry_after_secs })
            }
            Ok(()) => match self.upstream.send(outgoing, live.upstream_timeout).await {
                Ok(response) => {
                    spender.answered(response.status, &response.headers, SystemTime::now());
                    Outcome {
                        upstream: Some(response.elapsed),
                        ..Outcome::answered(response.to_response())
                    }
                }
                Err(error) => Outcome::failed(error.into()),
            },
        };
        Outcome {
            budget_wait: turn.wait(),
            ..answered
        }
    }

    /// The request to send upstream, its body read whole.
    async fn outgoing(
        &self,
        request: Request<Incoming>,
        credential: &Credential,
        ids: &RequestIds,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let body = read_body(body, self.body_limits).await?;
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let uri = format!("{}{}", self.upstream.base_url(), path_and_query);
        hop_by_hop::strip(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::AUTHORIZATION);
        if let Some(credential) = &credential.upstream {
            parts
                .headers
                .insert(header::AUTHORIZATION, credential.clone());
        }
        ids.upstream(&parts.headers).write(&mut parts.headers);
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        let mut outgoing = Request::new(body);
        *outgoing.method_mut() = parts.method;
        *outgoing.uri_mut() = uri.parse().map_err(|_| ProxyError::InvalidPath)?;
        *outgoing.headers_mut() = parts.headers;
        Ok(outgoing)
    }
}

/// The whole request body, or the client's fault: too large (a declared
/// length is refused before a byte is read), too slow, or unreadable.
async fn read_body(body: Incoming, limits: BodyLimits) -> Result<Bytes, ClientError> {
    if body.size_hint().lower() > limits.max_bytes {
        return Err(ClientError::BodyTooLarge);
    }
    let limit = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(limits.read_timeout, Limited::new(body, limit).collect());
    match collected.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ClientError::BodyTooLarge)
        }
        Ok(Err(_)) => Err(ClientError::UnreadableBody),
        Err(_) => Err(ClientError::BodyTimeout),
    }
}
