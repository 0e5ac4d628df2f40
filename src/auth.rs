//! Credentials: what the proxy sends upstream for a request, and which cache partition it reads.
//!
//! Two modes. Without `upstream.api_key` the client's `Authorization` travels
//! upstream and the cache is partitioned by its SHA-256 fingerprint. With it,
//! clients prove themselves with a token from `auth.client_tokens_sha256`, the
//! proxy's key travels instead, and one partition serves everyone.

use std::collections::HashSet;

use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use http::{header, HeaderMap, HeaderValue};

use crate::config::{Secret, Settings};
use crate::domain::{Fingerprint, Partition};
use crate::error::ProxyError;

/// What a request carries upstream and which partition it belongs to.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The `Authorization` value to send upstream, if any (marked sensitive).
    pub upstream: Option<HeaderValue>,
    pub partition: Partition,
}

/// Decides each request's credential, by the configured mode.
#[derive(Debug)]
pub enum Authenticator {
    /// Forward the client's `Authorization`.
    PassThrough,
    /// Send the proxy's key; admit clients by token digest.
    ProxyKey {
        key: Secret,
        client_tokens: HashSet<[u8; 32]>,
        allow_anonymous: bool,
    },
}

impl Authenticator {
    /// The mode the settings describe.
    pub fn from_settings(settings: &Settings) -> Authenticator {
        match &settings.upstream.api_key {
            None => Authenticator::PassThrough,
            Some(key) => Authenticator::ProxyKey {
                key: key.clone(),
                client_tokens: settings.auth.client_tokens_sha256.clone(),
                allow_anonymous: settings.auth.allow_anonymous,
            },
        }
    }

    /// The credential of a request to a `/v1/` route, or why it is refused.
    pub fn credential(&self, headers: &HeaderMap) -> Result<Credential, ProxyError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let presented = values.next();
        if values.next().is_some() {
            return Err(ProxyError::AmbiguousAuthorization);
        }
        match self {
            Authenticator::PassThrough => Ok(match presented {
                None => Credential {
                    upstream: None,
                    partition: Partition::Anonymous,
                },
                Some(value) => {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    Credential {
                        partition: Partition::Key(Fingerprint::of(value.as_bytes())),
                        upstream: Some(value),
                    }
                }
            }),
            Authenticator::ProxyKey {
                key,
                client_tokens,
                allow_anonymous,
            } => {
                if !allow_anonymous && !token_is_known(headers, client_tokens) {
                    return Err(ProxyError::Unauthenticated);
                }
                Ok(Credential {
                    upstream: Some(key.header_value().clone()),
                    partition: Partition::Shared,
                })
            }
        }
    }
}

fn token_is_known(headers: &HeaderMap, client_tokens: &HashSet<[u8; 32]>) -> bool {
    headers
        .typed_get::<Authorization<Bearer>>()
        .map(|bearer| client_tokens.contains(&Fingerprint::of(bearer.token().as_bytes()).digest()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn proxy_key(tokens: &[&str], allow_anonymous: bool) -> Authenticator {
        Authenticator::ProxyKey {
            key: Secret::new(HeaderValue::from_static("Bearer sk_proxy")),
            client_tokens: tokens
                .iter()
                .map(|t| Fingerprint::of(t.as_bytes()).digest())
                .collect(),
            allow_anonymous,
        }
    }

    #[test]
    fn pass_through_partitions_by_credential() {
        let auth = Authenticator::PassThrough;
        let a = auth.credential(&headers(&["Bearer a"])).unwrap();
        let b = auth.credential(&headers(&["Bearer b"])).unwrap();
        let none = auth.credential(&headers(&[])).unwrap();
        assert_ne!(a.partition, b.partition);
        assert_eq!(none.partition, Partition::Anonymous);
        assert_ne!(a.partition, none.partition);
        assert_eq!(a.upstream.unwrap(), "Bearer a");
        assert!(none.upstream.is_none());
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let auth = Authenticator::PassThrough;
        let error = auth.credential(&headers(&["Bearer a", "Bearer b"]));
        assert_eq!(error.unwrap_err(), ProxyError::AmbiguousAuthorization);
    }

    #[test]
    fn proxy_key_mode_admits_known_tokens_and_sends_its_own_key() {
        let auth = proxy_key(&["client-1"], false);
        let ok = auth.credential(&headers(&["Bearer client-1"])).unwrap();
        assert_eq!(ok.upstream.unwrap(), "Bearer sk_proxy");
        assert_eq!(ok.partition, Partition::Shared);
        for refused in [
            &["Bearer client-2"][..],
            &[][..],
            &["Basic Y2xpZW50LTE="][..],
        ] {
            let error = auth.credential(&headers(refused)).unwrap_err();
            assert_eq!(error, ProxyError::Unauthenticated);
        }
    }

    #[test]
    fn anonymous_clients_pass_only_when_allowed() {
        let auth = proxy_key(&[], true);
        let ok = auth.credential(&headers(&[])).unwrap();
        assert_eq!(ok.upstream.unwrap(), "Bearer sk_proxy");
    }
}
