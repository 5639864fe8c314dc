//! rustls configurations: the public listener's server config (PEM files, ALPN h2 +
//! http/1.1) and the upstream client config (webpki roots plus an optional CA file). Both use
//! the one crypto provider, aws-lc-rs.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificates: {source}")]
    Certs {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: no certificate found")]
    NoCerts { path: String },
    #[error("{path}: cannot read private key: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: certificate not accepted: {source}")]
    BadCert { path: String, source: rustls::Error },
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
}

/// The process-wide crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let p = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: p.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts { path: p });
    }
    Ok(certs)
}

/// Server config for the public listener.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config for an `https://` upstream: webpki roots, plus `ca_file` when given.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        for c in certs(ca)? {
            roots.add(c).map_err(|source| TlsError::BadCert {
                path: ca.display().to_string(),
                source,
            })?;
        }
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}
