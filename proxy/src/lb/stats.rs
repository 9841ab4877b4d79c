//! Per-cluster resiliency counters under Envoy's cluster stat names
//! (`envoy_cluster_upstream_rq_retry` and friends, labelled by
//! `cluster_name` as Envoy's Prometheus output does). prometheus-client
//! appends `_total` to counters, so they are scraped as
//! `envoy_cluster_upstream_rq_retry_total` and so on.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::Metrics;

/// The `cluster_name` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// Cluster name, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub cluster_name: String,
}

/// Resiliency counters by cluster.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Retries sent (`upstream_rq_retry`).
    pub retry: Family<ClusterLabel, Counter>,
    /// Retries refused by the retry budget or `max_retries`
    /// (`upstream_rq_retry_overflow`).
    pub retry_overflow: Family<ClusterLabel, Counter>,
    /// Requests refused by a circuit breaker with `UO`
    /// (`upstream_rq_pending_overflow`).
    pub overflow: Family<ClusterLabel, Counter>,
    /// Outlier ejections made (`outlier_detection.ejections_enforced_total`).
    pub ejections: Family<ClusterLabel, Counter>,
    registered: OnceLock<()>,
}

impl ClusterStats {
    /// Adds the counters to the proxy's Prometheus registry (once).
    pub fn register(&self, metrics: &Metrics) {
        self.registered.get_or_init(|| {
            metrics.register_with(|r| {
                r.register(
                    "envoy_cluster_upstream_rq_retry",
                    "Retries sent, by cluster",
                    self.retry.clone(),
                );
                r.register(
                    "envoy_cluster_upstream_rq_retry_overflow",
                    "Retries not sent because the retry budget or max_retries was exhausted",
                    self.retry_overflow.clone(),
                );
                r.register(
                    "envoy_cluster_upstream_rq_pending_overflow",
                    "Requests refused by a circuit breaker (UO)",
                    self.overflow.clone(),
                );
                r.register(
                    "envoy_cluster_outlier_detection_ejections_enforced",
                    "Endpoints ejected by outlier detection",
                    self.ejections.clone(),
                );
            });
        });
    }

    /// Counts one event of `family` for `cluster`.
    pub fn inc(family: &Family<ClusterLabel, Counter>, cluster: &str) {
        family
            .get_or_create(&ClusterLabel {
                cluster_name: cluster.to_owned(),
            })
            .inc();
    }
}
