//! Prometheus metrics (prometheus-client) of the CA server and of the
//! workload client, each registered under its own prefixed sub-registry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why the CA refused a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RejectReason {
    /// No valid credential.
    Unauthenticated,
    /// The CSR asks for another identity than the caller's.
    IdentityMismatch,
    /// The CSR or request is malformed or weak.
    InvalidRequest,
    /// Signing failed on the CA's side.
    Internal,
}

/// Label set of rejected requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Why.
    pub reason: RejectReason,
}

/// Metrics of the CA server (`mesh_ca_*`).
#[derive(Debug, Clone, Default)]
pub struct CaMetrics {
    /// SVIDs issued.
    pub issued: Counter,
    /// Requests refused, by reason.
    pub rejected: Family<RejectLabels, Counter>,
}

impl CaMetrics {
    /// Creates the metrics and registers them under `mesh_ca`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = CaMetrics::default();
        let sub = registry.sub_registry_with_prefix("mesh_ca");
        sub.register("svids_issued", "X.509-SVIDs issued", m.issued.clone());
        sub.register(
            "requests_rejected",
            "Certificate requests refused, by reason",
            m.rejected.clone(),
        );
        m
    }

    /// Counts a refused request.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

/// Metrics of the workload client (`mesh_ca_client_*`).
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    /// `notAfter` of the current certificate, seconds since the Unix epoch
    /// (0 when there is none).
    pub cert_expiry_seconds: Gauge,
    /// Certificates obtained (first issue and renewals).
    pub renewals: Counter,
    /// Failed attempts to get a certificate.
    pub failures: Counter,
}

impl ClientMetrics {
    /// Creates the metrics and registers them under `mesh_ca_client`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClientMetrics::default();
        let sub = registry.sub_registry_with_prefix("mesh_ca_client");
        sub.register(
            "cert_expiry_timestamp_seconds",
            "notAfter of the workload certificate in use (Unix seconds)",
            m.cert_expiry_seconds.clone(),
        );
        sub.register(
            "certs_obtained",
            "Workload certificates obtained from the CA",
            m.renewals.clone(),
        );
        sub.register(
            "fetch_failures",
            "Failed attempts to get a workload certificate",
            m.failures.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_their_prefixes() {
        let mut registry = Registry::default();
        let ca = CaMetrics::register(&mut registry);
        let client = ClientMetrics::register(&mut registry);
        ca.issued.inc();
        ca.reject(RejectReason::IdentityMismatch);
        client.cert_expiry_seconds.set(1_900_000_000);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("mesh_ca_svids_issued_total 1"), "{out}");
        assert!(
            out.contains("mesh_ca_requests_rejected_total{reason=\"IdentityMismatch\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("mesh_ca_client_cert_expiry_timestamp_seconds 1900000000"),
            "{out}"
        );
    }
}
