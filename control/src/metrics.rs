//! meshd's Prometheus metrics, under Istio's names (`pilot_*`) so existing
//! dashboards work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels by xDS type (`cds`, `eds`, `lds`, `rds`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The short type, lower case.
    pub r#type: String,
}

/// Every metric meshd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Responses pushed, by type.
    pub pushes: Family<TypeLabels, Counter>,
    /// NACKs received, by type.
    pub rejects: Family<TypeLabels, Counter>,
    /// Time to compute and send one proxy's push (seconds).
    pub push_time: Histogram,
    /// Connected xDS streams.
    pub connected: Gauge,
    /// Snapshots built.
    pub snapshots: Counter,
    /// The embedded CA's counters (`mesh_ca_svids_issued_total`,
    /// `mesh_ca_requests_rejected_total{reason}`), shared with its server.
    pub ca: mesh_ca::metrics::CaMetrics,
    /// When the newest mesh root expires (seconds since the epoch).
    pub ca_root_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let pushes = Family::<TypeLabels, Counter>::default();
        let rejects = Family::<TypeLabels, Counter>::default();
        let push_time = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let connected = Gauge::default();
        let snapshots = Counter::default();
        let pilot = registry.sub_registry_with_prefix("pilot");
        pilot.register(
            "xds_pushes",
            "xDS responses pushed, by type",
            pushes.clone(),
        );
        pilot.register(
            "total_xds_rejects",
            "xDS responses rejected (NACKed) by proxies, by type",
            rejects.clone(),
        );
        pilot.register(
            "xds_push_time",
            "Seconds to generate and send one proxy's push",
            push_time.clone(),
        );
        pilot.register("xds", "Connected xDS streams", connected.clone());
        pilot.register(
            "snapshots",
            "Config/registry snapshots built",
            snapshots.clone(),
        );
        let ca = mesh_ca::metrics::CaMetrics::register(&mut registry);
        let ca_root_expiry = Gauge::default();
        registry.sub_registry_with_prefix("mesh_ca").register(
            "root_cert_expiry_timestamp",
            "When the newest mesh root certificate expires (seconds since the epoch)",
            ca_root_expiry.clone(),
        );
        Self {
            registry,
            ca,
            ca_root_expiry,
            pushes,
            rejects,
            push_time,
            connected,
            snapshots,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one push of `short_type` (e.g. `CDS`).
    pub fn pushed(&self, short_type: &str) {
        self.pushes
            .get_or_create(&TypeLabels {
                r#type: short_type.to_ascii_lowercase(),
            })
            .inc();
    }

    /// Counts one NACK of `short_type`.
    pub fn rejected(&self, short_type: &str) {
        self.rejects
            .get_or_create(&TypeLabels {
                r#type: short_type.to_ascii_lowercase(),
            })
            .inc();
    }
}

#[cfg(test)]
mod ca_tests {
    use super::*;

    #[test]
    fn ca_counters_and_root_expiry_are_exported() {
        let m = Metrics::new();
        m.ca.issued.inc();
        m.ca.reject(mesh_ca::metrics::RejectReason::Internal);
        m.ca_root_expiry.set(1_900_000_000);
        let text = m.encode();
        assert!(text.contains("mesh_ca_svids_issued_total 1"), "{text}");
        assert!(
            text.contains("mesh_ca_requests_rejected_total{reason="),
            "{text}"
        );
        assert!(
            text.contains("mesh_ca_root_cert_expiry_timestamp 1900000000"),
            "{text}"
        );
    }
}
