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

mod memo;

use crate::config::{Secret, Settings};
use crate::domain::{Fingerprint, Partition};
use crate::error::ProxyError;

/// What a request carries upstream, which partition it belongs to, and who sent it.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The `Authorization` value to send upstream, if any (marked sensitive).
    pub upstream: Option<HeaderValue>,
    pub partition: Partition,
    /// The client, for the upstream budget's turns.
    pub caller: Caller,
}

/// Who sent a request, for the upstream budget's turns (SPEC section 12):
/// the client's own token, whichever credential travels.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No token.
    Anonymous,
    /// The fingerprint of its token: its pass-through credential, or the
    /// bearer token checked against `auth.client_tokens_sha256`.
    Token(Fingerprint),
    /// A token nobody checked (anonymous clients allowed with the proxy's
    /// key), marked sensitive: hashed only when an upstream call needs it.
    Unchecked(HeaderValue),
}

impl Credential {
    /// The fingerprint of the `Authorization` sent upstream (none without
    /// one): whose quota an upstream call for this request spends. Hashed
    /// here, on the call's path, so a HIT never pays for it.
    pub fn upstream_fingerprint(&self) -> Option<Fingerprint> {
        match (self.partition, &self.upstream) {
            (Partition::Key(fingerprint), _) => Some(fingerprint),
            (_, sent) => sent.as_ref().map(|sent| Fingerprint::of(sent.as_bytes())),
        }
    }

    /// The fingerprint of the client's own token (none: anonymous): whose
    /// turn this request's upstream call takes.
    pub fn client_fingerprint(&self) -> Option<Fingerprint> {
        match &self.caller {
            Caller::Anonymous => None,
            Caller::Token(fingerprint) => Some(*fingerprint),
            Caller::Unchecked(value) => Some(token_fingerprint(value)),
        }
    }
}

/// The fingerprint of a bearer token, or of the whole value when it is not one.
fn token_fingerprint(authorization: &HeaderValue) -> Fingerprint {
    match <Authorization<Bearer> as headers::Header>::decode(&mut std::iter::once(authorization)) {
        Ok(bearer) => Fingerprint::of(bearer.token().as_bytes()),
        Err(_) => Fingerprint::of(authorization.as_bytes()),
    }
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
                    caller: Caller::Anonymous,
                },
                Some(value) => {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    let fingerprint = memo::fingerprint(value.as_bytes());
                    Credential {
                        partition: Partition::Key(fingerprint),
                        upstream: Some(value),
                        caller: Caller::Token(fingerprint),
                    }
                }
            }),
            Authenticator::ProxyKey {
                key,
                client_tokens,
                allow_anonymous,
            } => {
                let caller = if *allow_anonymous {
                    unchecked(presented)
                } else {
                    match bearer_fingerprint(headers) {
                        Some(token) if client_tokens.contains(&token.digest()) => {
                            Caller::Token(token)
                        }
                        _ => return Err(ProxyError::Unauthenticated),
                    }
                };
                Ok(Credential {
                    upstream: Some(key.header_value().clone()),
                    partition: Partition::Shared,
                    caller,
                })
            }
        }
    }
}

/// The fingerprint of the request's bearer token, if it has one.
fn bearer_fingerprint(headers: &HeaderMap) -> Option<Fingerprint> {
    headers
        .typed_get::<Authorization<Bearer>>()
        .map(|bearer| memo::fingerprint(bearer.token().as_bytes()))
}

/// An unchecked client's identity: its token, hashed later, or anonymous.
fn unchecked(presented: Option<&HeaderValue>) -> Caller {
    match presented {
        Some(value) => {
            let mut value = value.clone();
            value.set_sensitive(true);
            Caller::Unchecked(value)
        }
        None => Caller::Anonymous,
    }
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
    fn calls_spend_the_sent_keys_quota_and_take_the_clients_own_turn() {
        let pass = Authenticator::PassThrough;
        let a = pass.credential(&headers(&["Bearer a"])).unwrap();
        let a_key = Some(Fingerprint::of(b"Bearer a"));
        assert_eq!(
            (a.upstream_fingerprint(), a.client_fingerprint()),
            (a_key, a_key)
        );
        let none = pass.credential(&headers(&[])).unwrap();
        assert_eq!(
            (none.upstream_fingerprint(), none.client_fingerprint()),
            (None, None)
        );

        let proxy = Some(Fingerprint::of(b"Bearer sk_proxy"));
        let token = |t: &str| Some(Fingerprint::of(t.as_bytes()));
        for allow_anonymous in [false, true] {
            let auth = proxy_key(&["client-1", "client-2"], allow_anonymous);
            let one = auth.credential(&headers(&["Bearer client-1"])).unwrap();
            let two = auth.credential(&headers(&["Bearer client-2"])).unwrap();
            assert_eq!(one.upstream_fingerprint(), proxy);
            assert_eq!(two.upstream_fingerprint(), proxy);
            assert_eq!(one.client_fingerprint(), token("client-1"));
            assert_eq!(two.client_fingerprint(), token("client-2"));
        }
        let open = proxy_key(&[], true);
        let anonymous = open.credential(&headers(&[])).unwrap();
        assert_eq!(anonymous.client_fingerprint(), None);
        let unknown = open.credential(&headers(&["Bearer someone"])).unwrap();
        assert_eq!(unknown.client_fingerprint(), token("someone"));
    }

    #[test]
    fn anonymous_clients_pass_only_when_allowed() {
        let auth = proxy_key(&[], true);
        let ok = auth.credential(&headers(&[])).unwrap();
        assert_eq!(ok.upstream.unwrap(), "Bearer sk_proxy");
    }
}
