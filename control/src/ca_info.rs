//! `/debug/ca`: the embedded CA's public facts (trust domain, roots with
//! their validity) and meshd's clock, for `meshctl check`'s CA and
//! clock-skew checks. Nothing secret: certificates only.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use serde::Serialize;

use crate::http::{Body, error, json};
use crate::state::Shared;

/// What meshd knows of its embedded CA once it has loaded.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Trusted roots, DER (two during a root rotation).
    pub roots: Vec<Vec<u8>>,
    /// When the signing chain expires (seconds since the epoch).
    pub signer_not_after: i64,
}

impl CaInfo {
    /// The facts of a loaded CA.
    pub fn of(ca: &mesh_ca::CertificateAuthority) -> Self {
        Self {
            trust_domain: ca.trust_domain().to_string(),
            roots: ca
                .trust_bundle()
                .roots()
                .iter()
                .map(|r| r.as_ref().to_vec())
                .collect(),
            signer_not_after: ca.signer_not_after().unix_timestamp(),
        }
    }
}

/// One root certificate as `/debug/ca` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RootInfo {
    /// Subject DN.
    pub subject: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (seconds since the epoch).
    pub not_before: i64,
    /// End of validity (seconds since the epoch).
    pub not_after: i64,
}

/// Parses a DER certificate's subject, serial and validity.
pub fn root_info(der: &[u8]) -> Option<RootInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(RootInfo {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// meshd's clock in milliseconds since the epoch.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Serves `/debug/ca`.
pub fn handle(shared: &Shared) -> Response<Body> {
    let current = shared
        .ca
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(ca) = current else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the embedded CA has not loaded yet; retry in a moment".into(),
        );
    };
    let roots: Vec<RootInfo> = ca.roots.iter().filter_map(|r| root_info(r)).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "trust_domain": ca.trust_domain,
            "roots": roots,
            "signer_not_after": ca.signer_not_after,
            "now_ms": now_ms(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}
