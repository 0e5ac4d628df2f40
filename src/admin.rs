//! The admin listener: Prometheus metrics, health, cache stats and purges, for operators only.

use std::future::Future;
use std::sync::Arc;

use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::ResponseBody;
use crate::budget::Budgets;
use crate::cache::Cache;
use crate::cache::Purged;
use crate::domain::{ConversationId, Fingerprint};
use crate::error::ProxyError;
use crate::handler::refused_head;
use crate::live::LiveSettings;
use crate::metrics::Metrics;
use crate::server::{HeadRefusal, Respond};

const PURGE_CONVERSATION: &str = "/admin/cache/conversations/";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin routes work on.
#[derive(Clone)]
pub struct AdminState {
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    /// `admin.token_sha256` is read from here, so a reload can change it.
    live: Arc<LiveSettings>,
    /// The upstream budgets, shown (by fingerprint prefix) in `/admin/stats`.
    budgets: Arc<Budgets>,
}

impl AdminState {
    /// Admin routes over the proxy's cache and metrics, guarded by the live
    /// settings' `admin.token_sha256`.
    pub fn new(
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        live: Arc<LiveSettings>,
        budgets: Arc<Budgets>,
    ) -> AdminState {
        AdminState {
            cache,
            metrics,
            live,
            budgets,
        }
    }
}

impl Respond for AdminState {
    fn respond(
        self: Arc<Self>,
        request: Box<Request<Incoming>>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        handle(self, *request)
    }

    fn refuse(&self, refusal: HeadRefusal) -> Response<ResponseBody> {
        refused_head(refusal)
    }
}

/// Answers one admin request and logs it (purges are an audit trail).
async fn handle(state: Arc<AdminState>, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = route(&state, &request)
        .await
        .unwrap_or_else(ProxyError::into_response);
    tracing::info!(
        target: "ayra_cache::admin",
        %method,
        %path,
        status = response.status().as_u16(),
        "admin request"
    );
    response
}

async fn route(
    state: &AdminState,
    request: &Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let path = request.uri().path();
    let method = request.method();
    match path {
        "/metrics" => {
            only(method, &Method::GET)?;
            let usage = state.cache.usage().await;
            let text = state.metrics.encode(usage.entries, usage.bytes);
            Ok(body(text, OPENMETRICS))
        }
        "/healthz" => {
            only(method, &Method::GET)?;
            Ok(json_body(&json!({"status": "ok"})))
        }
        "/admin/stats" => {
            authorize(state, request)?;
            only(method, &Method::GET)?;
            Ok(json_body(&stats(state).await))
        }
        "/admin/cache" => {
            authorize(state, request)?;
            only(method, &Method::DELETE)?;
            let purged = state.cache.purge_all().await;
            tracing::warn!(target: "ayra_cache::admin", purged = purged.local, shared = ?purged.shared, "purged the whole cache");
            Ok(json_body(&purge_report(purged)))
        }
        _ => match path.strip_prefix(PURGE_CONVERSATION) {
            Some(raw_id) => {
                authorize(state, request)?;
                only(method, &Method::DELETE)?;
                let id = ConversationId::parse(raw_id)?;
                let purged = state.cache.purge_conversation(&id).await;
                tracing::warn!(target: "ayra_cache::admin", conversation = id.as_str(), purged = purged.local, shared = ?purged.shared, "purged a conversation");
                Ok(json_body(&purge_report(purged)))
            }
            None => Err(ProxyError::NotFound),
        },
    }
}

/// `{"purged": N}`, plus what the shared tier did when there is one.
fn purge_report(purged: Purged) -> serde_json::Value {
    match purged.shared {
        None => json!({ "purged": purged.local }),
        Some(Ok(values)) => json!({ "purged": purged.local, "shared": { "purged": values } }),
        Some(Err(error)) => {
            json!({ "purged": purged.local, "shared": { "error": error.as_str() } })
        }
    }
}

fn only(method: &Method, allowed: &Method) -> Result<(), ProxyError> {
    if method == allowed {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed)
    }
}

/// The bearer token must hash to `admin.token_sha256`; with none configured, admin is off.
fn authorize(state: &AdminState, request: &Request<Incoming>) -> Result<(), ProxyError> {
    let expected = state
        .live
        .load()
        .admin_token
        .ok_or(ProxyError::AdminDisabled)?;
    let presented = request
        .headers()
        .typed_get::<Authorization<Bearer>>()
        .ok_or(ProxyError::AdminUnauthenticated)?;
    if Fingerprint::of(presented.token().as_bytes()) == Fingerprint::from_digest(expected) {
        Ok(())
    } else {
        Err(ProxyError::AdminUnauthenticated)
    }
}

async fn stats(state: &AdminState) -> serde_json::Value {
    let usage = state.cache.usage().await;
    let totals = state.metrics.totals();
    let shared = match state.cache.shared_up() {
        None => "off",
        Some(true) => "up",
        Some(false) => "down",
    };
    json!({
        "entries": usage.entries,
        "bytes": usage.bytes,
        "hits": totals.hits,
        "misses": totals.misses,
        "hit_ratio": totals.hit_ratio(),
        "upstream_errors": totals.upstream_errors,
        "uptime_seconds": totals.uptime.as_secs(),
        "shared_tier": shared,
        "budgets": state.budgets.snapshot(),
    })
}

fn body(text: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_body(value: &serde_json::Value) -> Response<ResponseBody> {
    body(value.to_string(), "application/json")
}
