//! Pass-through: forwards a request upstream as the client sent it, less what must not travel.
//!
//! Method, path, query, body and end-to-end headers travel; hop-by-hop
//! headers do not, `Host` becomes the upstream's, and the `Authorization`
//! sent is the request's credential (the proxy's key in proxy-key mode).

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::auth::Credential;
use crate::error::ProxyError;
use crate::handler::AppState;
use crate::hop_by_hop;
use crate::live::Live;

/// Forwards `request` and answers with whatever the upstream said. Never cached.
pub async fn forward(
    state: &AppState,
    live: &Live,
    request: Request<Incoming>,
    credential: &Credential,
    record: &mut AccessRecord,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let uri = format!("{}{}", state.upstream.base_url(), path_and_query);
    hop_by_hop::strip(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    if let Some(credential) = &credential.upstream {
        parts
            .headers
            .insert(header::AUTHORIZATION, credential.clone());
    }
    let mut outgoing = Request::new(body.boxed());
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri.parse().map_err(|_| ProxyError::InvalidPath)?;
    *outgoing.headers_mut() = parts.headers;
    let response = state.upstream.send(outgoing, live.upstream_timeout).await?;
    record.upstream = Some(response.elapsed);
    Ok(response.to_response())
}
