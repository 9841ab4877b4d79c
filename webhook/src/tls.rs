//! The webhook server's TLS configuration from PEM.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a serving certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain PEM holds no readable `CERTIFICATE` block.
    #[error("the certificate chain PEM holds no readable certificate")]
    NoCertificate,
    /// A `CERTIFICATE` block does not decode.
    #[error("the certificate chain PEM is malformed: {0}")]
    BadCertificate(#[source] rustls::pki_types::pem::Error),
    /// The key PEM holds no readable private key (PKCS#8, PKCS#1 or SEC1).
    #[error("the private key PEM holds no readable private key: {0}")]
    BadKey(#[source] rustls::pki_types::pem::Error),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot serve TLS: {0}")]
    Rustls(#[source] rustls::Error),
}

/// A server configuration for the webhooks from a PEM certificate chain
/// (leaf first) and its PEM private key, with the ring provider and ALPN
/// `h2`, `http/1.1` (the API server speaks HTTP/2 to webhooks when offered).
pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::BadCertificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::BadKey)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration for the webhooks whose certificate comes from
/// `resolver` at every handshake (a certificate renewed in place, such as
/// meshd's `mesh_ca::serving::ServingCert`), with the same provider and
/// ALPN as [`server_config`].
pub fn server_config_with_resolver(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
