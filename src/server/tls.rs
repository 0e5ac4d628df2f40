//! TLS on the listener: rustls, with a certificate that a reload (SIGHUP) replaces atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and the key do not make a usable pair: {0}")]
    Pair(String),
}

/// Hands every handshake the current certificate; a reload swaps it.
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
    /// A resolver serving the pair at `settings`' paths.
    pub fn load(settings: &TlsSettings) -> Result<CertResolver, TlsError> {
        Ok(CertResolver {
            current: ArcSwap::from(Arc::new(certified_key(settings)?)),
        })
    }

    /// Reads the pair again; on any error the old pair keeps serving.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        let fresh = certified_key(settings)?;
        self.current.store(Arc::new(fresh));
        Ok(())
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

/// Parses and checks the PEM pair (the key must match the leaf certificate).
pub fn certified_key(settings: &TlsSettings) -> Result<CertifiedKey, TlsError> {
    let cert_path = settings.cert_path.display().to_string();
    let key_path = settings.key_path.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_path)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsError::Certificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_path,
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|e| TlsError::Key {
        path: key_path,
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))
}
