//! TLS certificate pairs: PEM files read into what rustls serves, in the one place pairs are parsed.
//!
//! Config validation calls [`load`] once per pair (at start and on every
//! reload); the listener and the reload use the parsed pair it returns, so a
//! pair that validated is the pair that serves.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and the key do not make a usable pair: {0}")]
    Mismatch(String),
}

/// Parses the chain at `cert_path` and the key at `key_path`, and checks that
/// the key matches the leaf certificate.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, PairError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect())
        .map_err(|e| PairError::Certificate {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PairError::Certificate {
            path: cert_path.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| PairError::Key {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| PairError::Mismatch(e.to_string()))
}
