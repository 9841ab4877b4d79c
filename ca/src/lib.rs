//! The mesh's SPIFFE certificate authority: the signing material and its
//! on-disk layout ([`authority`]), CSR verification ([`csr`]), SVID building
//! ([`issue`]), trust bundles ([`bundle`]), caller authentication
//! ([`token`], [`auth`]), the gRPC service ([`service`], [`server`]), and the
//! workload side that proxies use to get and renew their certificate
//! ([`client`], [`verifier`]).
//!
//! The binary in `src/main.rs` only parses flags and calls this library.

pub mod auth;
pub mod authority;
pub mod bundle;
pub mod client;
pub mod csr;
pub mod issue;
pub mod metrics;
pub mod pem;
pub mod reload;
pub mod rotation;
pub mod server;
pub mod service;
pub mod serving;
pub mod token;
pub mod verifier;

pub use authority::{CertificateAuthority, InitOptions, IssuePolicy, KeyAlgorithm};
pub use bundle::TrustBundle;
pub use client::{CaClient, CaClientConfig, Credential, Identity, WorkloadCert};

pub use mesh_model::SpiffeId;

/// Installs the process-wide rustls crypto provider (ring). Call first thing
/// in `main`; a second call is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
