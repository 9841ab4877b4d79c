//! mesh-proxy: the mesh's sidecar data plane. It consumes standard Envoy xDS
//! resources ([`xds`]), converts them at the edge into its own immutable
//! config ([`config`]) and serves traffic from the latest accepted snapshot.
//! The binary in `src/main.rs` only parses flags.

pub mod admin;
pub mod agent;
pub mod app_probe;
pub mod cert_files;
pub mod config;
pub mod config_dump;
pub mod dns;
pub mod drain;
pub mod health;
pub mod http;
pub mod identity;
pub mod labels;
pub mod lb;
pub mod listener;
pub mod metrics;
pub mod outlier;
pub mod peer_metadata;
pub mod runtime;
pub mod tcp;
pub mod tls;
pub mod xds;

/// Installs the process-wide rustls crypto provider (ring). Call first thing
/// in `main`; a second call is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
