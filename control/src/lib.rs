//! Library of the `control/` crate (meshd); the binary in `src/main.rs` only
//! parses flags and calls [`server::run`].

pub mod api;
pub mod ca_info;
pub mod config;
pub mod config_dump;
pub mod debug;
pub mod documents;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod translate;
pub mod vip;
pub mod xds;

/// Installs the process-wide rustls crypto provider (ring). Call first thing
/// in `main`; a second call is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
