//! TLS on the listener: rustls, with a certificate pair that a reload (SIGHUP) replaces atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Hands every handshake the current certificate pair; a reload swaps it.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertResolver {
    /// A resolver serving `pair` (parsed and checked by config validation).
    pub fn new(pair: Arc<CertifiedKey>) -> CertResolver {
        CertResolver {
            current: ArcSwap::from(pair),
        }
    }

    /// Serves `pair` to every handshake from now on; open connections keep theirs.
    pub fn replace(&self, pair: Arc<CertifiedKey>) {
        self.current.store(pair);
    }

    /// The acceptor for the listener: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}
