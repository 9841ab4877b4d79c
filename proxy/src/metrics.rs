//! Istio's standard metrics (names and labels as Istio's dashboards expect),
//! on prometheus-client with typed label sets.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::peer_metadata::{PeerMetadata, or_unknown, spiffe_parts};

/// The workload on one side of a request or connection, as Istio labels
/// it (`unknown` where a fact is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// Workload name.
    pub workload: String,
    /// Workload namespace.
    pub namespace: String,
    /// SPIFFE ID.
    pub principal: String,
    /// `app` label.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// Canonical service (see [`PeerMetadata::canonical_service`]).
    pub canonical_service: String,
    /// Canonical revision (see [`PeerMetadata::canonical_revision`]).
    pub canonical_revision: String,
    /// Cluster id.
    pub cluster: String,
}

impl Side {
    /// A side nothing is known about (canonical revision `latest`, as
    /// Istio reports it).
    pub fn unknown() -> Self {
        let u = || "unknown".to_owned();
        Self {
            workload: u(),
            namespace: u(),
            principal: u(),
            app: u(),
            version: u(),
            canonical_service: u(),
            canonical_revision: "latest".to_owned(),
            cluster: u(),
        }
    }

    /// This proxy's own workload: its metadata once the agent set it, the
    /// workload name and SPIFFE ID it runs with.
    pub fn own(shared: &crate::runtime::Shared) -> Self {
        let mut side = match shared.peer_metadata.local() {
            Some(local) => Self::of(&local.meta, &shared.workload.principal),
            None => Self {
                principal: shared.workload.principal.clone(),
                ..Self::unknown()
            },
        };
        side.workload = or_unknown(&shared.workload.workload).to_owned();
        if side.canonical_service == "unknown" {
            side.canonical_service = side.workload.clone();
        }
        side
    }

    /// A side known only by its verified SPIFFE ID (namespace from the ID),
    /// or nothing at all.
    pub fn verified(spiffe_id: Option<&str>) -> Self {
        let Some(id) = spiffe_id else {
            return Self::unknown();
        };
        Self {
            principal: id.to_owned(),
            namespace: spiffe_parts(id).map_or("unknown", |(ns, _)| ns).to_owned(),
            ..Self::unknown()
        }
    }

    /// The side a workload's metadata describes, with its SPIFFE ID.
    pub fn of(meta: &PeerMetadata, principal: &str) -> Self {
        let own = |v: &str| or_unknown(v).to_owned();
        Self {
            workload: own(&meta.workload_name),
            namespace: own(&meta.namespace),
            principal: own(principal),
            app: meta.app().to_owned(),
            version: meta.version().to_owned(),
            canonical_service: meta.canonical_service().to_owned(),
            canonical_revision: meta.canonical_revision().to_owned(),
            cluster: own(&meta.cluster_id),
        }
    }
}

/// Labels of the HTTP request metrics: Istio's standard set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: String,
    /// Calling workload.
    pub source_workload: String,
    /// Calling workload's canonical service.
    pub source_canonical_service: String,
    /// Calling workload's canonical revision.
    pub source_canonical_revision: String,
    /// Calling workload's namespace.
    pub source_workload_namespace: String,
    /// Calling identity (SPIFFE ID) or `unknown`.
    pub source_principal: String,
    /// Calling workload's `app` label.
    pub source_app: String,
    /// Calling workload's `version` label.
    pub source_version: String,
    /// Calling workload's cluster id.
    pub source_cluster: String,
    /// Destination workload.
    pub destination_workload: String,
    /// Destination workload's namespace.
    pub destination_workload_namespace: String,
    /// Destination identity or `unknown`.
    pub destination_principal: String,
    /// Destination workload's `app` label.
    pub destination_app: String,
    /// Destination workload's `version` label.
    pub destination_version: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination workload's canonical service.
    pub destination_canonical_service: String,
    /// Destination workload's canonical revision.
    pub destination_canonical_revision: String,
    /// Destination service short name.
    pub destination_service_name: String,
    /// Destination service namespace.
    pub destination_service_namespace: String,
    /// Destination workload's cluster id.
    pub destination_cluster: String,
    /// `http` or `grpc`.
    pub request_protocol: String,
    /// gRPC status code, `-` when not gRPC (or none was seen).
    pub grpc_response_status: String,
    /// HTTP status.
    pub response_code: String,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: String,
}

/// What a request's labels are made of besides its two sides.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `source` or `destination`.
    pub reporter: &'a str,
    /// Destination service host (or `unknown`).
    pub service: &'a str,
    /// `http` or `grpc`.
    pub protocol: &'a str,
    /// HTTP status.
    pub status: u16,
    /// gRPC status, when gRPC and known.
    pub grpc_status: Option<u32>,
    /// Response flags, `-` when none.
    pub flags: &'a str,
    /// Mutual TLS on the mesh hop.
    pub mtls: bool,
}

fn policy(mtls: bool) -> String {
    if mtls { "mutual_tls" } else { "none" }.to_owned()
}

impl RequestLabels {
    /// The labels of one request between `source` and `destination`.
    pub fn new(source: Side, destination: Side, facts: RequestFacts<'_>) -> Self {
        let (service_name, service_namespace) = service_name_and_namespace(facts.service);
        Self {
            reporter: facts.reporter.to_owned(),
            source_workload: source.workload,
            source_canonical_service: source.canonical_service,
            source_canonical_revision: source.canonical_revision,
            source_workload_namespace: source.namespace,
            source_principal: source.principal,
            source_app: source.app,
            source_version: source.version,
            source_cluster: source.cluster,
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_principal: destination.principal,
            destination_app: destination.app,
            destination_version: destination.version,
            destination_service: or_unknown(facts.service).to_owned(),
            destination_canonical_service: destination.canonical_service,
            destination_canonical_revision: destination.canonical_revision,
            destination_service_name: service_name.to_owned(),
            destination_service_namespace: service_namespace.to_owned(),
            destination_cluster: destination.cluster,
            request_protocol: facts.protocol.to_owned(),
            response_code: facts.status.to_string(),
            grpc_response_status: facts
                .grpc_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            response_flags: facts.flags.to_owned(),
            connection_security_policy: policy(facts.mtls),
        }
    }
}

/// Labels of the TCP metrics: Istio's standard set without the HTTP ones
/// (`request_protocol` is `tcp`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: String,
    /// Calling workload.
    pub source_workload: String,
    /// Calling workload's canonical service.
    pub source_canonical_service: String,
    /// Calling workload's canonical revision.
    pub source_canonical_revision: String,
    /// Calling workload's namespace.
    pub source_workload_namespace: String,
    /// Calling identity or `unknown`.
    pub source_principal: String,
    /// Calling workload's `app` label.
    pub source_app: String,
    /// Calling workload's `version` label.
    pub source_version: String,
    /// Calling workload's cluster id.
    pub source_cluster: String,
    /// Destination workload.
    pub destination_workload: String,
    /// Destination workload's namespace.
    pub destination_workload_namespace: String,
    /// Destination identity or `unknown`.
    pub destination_principal: String,
    /// Destination workload's `app` label.
    pub destination_app: String,
    /// Destination workload's `version` label.
    pub destination_version: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination workload's canonical service.
    pub destination_canonical_service: String,
    /// Destination workload's canonical revision.
    pub destination_canonical_revision: String,
    /// Destination service short name.
    pub destination_service_name: String,
    /// Destination service namespace.
    pub destination_service_namespace: String,
    /// Destination workload's cluster id.
    pub destination_cluster: String,
    /// Always `tcp`.
    pub request_protocol: String,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: String,
}

impl TcpLabels {
    /// The labels of one connection between `source` and `destination`.
    pub fn new(
        reporter: &str,
        source: Side,
        destination: Side,
        service: &str,
        flags: &str,
        mtls: bool,
    ) -> Self {
        let (service_name, service_namespace) = service_name_and_namespace(service);
        Self {
            reporter: reporter.to_owned(),
            source_workload: source.workload,
            source_canonical_service: source.canonical_service,
            source_canonical_revision: source.canonical_revision,
            source_workload_namespace: source.namespace,
            source_principal: source.principal,
            source_app: source.app,
            source_version: source.version,
            source_cluster: source.cluster,
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_principal: destination.principal,
            destination_app: destination.app,
            destination_version: destination.version,
            destination_service: or_unknown(service).to_owned(),
            destination_canonical_service: destination.canonical_service,
            destination_canonical_revision: destination.canonical_revision,
            destination_service_name: service_name.to_owned(),
            destination_service_namespace: service_namespace.to_owned(),
            destination_cluster: destination.cluster,
            request_protocol: "tcp".to_owned(),
            response_flags: flags.to_owned(),
            connection_security_policy: policy(mtls),
        }
    }
}

/// Short name and namespace of a service host
/// (`reviews.shop.svc.cluster.local` → `reviews`, `shop`); a host that is
/// not a Kubernetes service name is its own name, namespace `unknown`.
pub fn service_name_and_namespace(host: &str) -> (&str, &str) {
    let host = or_unknown(host);
    let mut parts = host.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => (name, ns),
        _ => (host, "unknown"),
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // Istio's default buckets for istio_request_duration_milliseconds.
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

/// Istio's buckets for istio_request_bytes / istio_response_bytes (powers
/// of ten from 1 to 10^8). Written out rather than computed with
/// `exponential_buckets`: its `powf` is the binary's only use of libm, and
/// not linking libm keeps about 0.5 MB of shared-library pages out of the
/// sidecar's resident set (see docs/performance.md).
const BYTES_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

fn bytes_histogram() -> Histogram {
    Histogram::new(BYTES_BUCKETS)
}

/// The proxy's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RequestLabels>,
    request_bytes: HistogramFamily<RequestLabels>,
    response_bytes: HistogramFamily<RequestLabels>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
}

impl Metrics {
    /// Registers more metrics (the CA client's, say) in the registry this
    /// proxy serves on its Prometheus port.
    pub fn register_with(&self, register: impl FnOnce(&mut Registry)) {
        // A poisoned lock only means a panic elsewhere mid-encode; the
        // registry itself is still usable.
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        register(&mut registry);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(bytes_histogram);
        let response_bytes: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(bytes_histogram);
        let (tcp_sent, tcp_received, tcp_opened, tcp_closed) = (
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
        );
        let mut registry = Registry::default();
        // Counters get `_total` appended by the encoder.
        registry.register("istio_requests", "Requests handled", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body size",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body size",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream in TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream in TCP connections",
            tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_sent,
            tcp_received,
            tcp_opened,
            tcp_closed,
        }
    }
}

/// The four HTTP request series of one label set, looked up once: a
/// connection keeps the last one it used, so that a request with the same
/// labels as the one before records without building and hashing them.
#[derive(Debug, Clone)]
pub struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    /// Records one finished HTTP request.
    pub fn record(&self, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

impl Metrics {
    /// The series of one label set (created at zero when new).
    pub fn request_series(&self, labels: &RequestLabels) -> RequestSeries {
        RequestSeries {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }

    /// Records one finished HTTP request.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.request_series(labels)
            .record(duration_ms, request_bytes, response_bytes);
    }

    /// Records a TCP connection opening.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Records a TCP connection closing with its byte counts.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
        self.tcp_closed.get_or_create(labels).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The service host of an Istio cluster name
/// (`outbound|9080|v1|reviews.default.svc.cluster.local` → the host).
pub fn service_of_cluster(cluster: &str) -> String {
    let parts: Vec<&str> = cluster.split('|').collect();
    match parts.as_slice() {
        [_, _, _, host] if !host.is_empty() => (*host).to_owned(),
        _ => cluster.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_buckets_are_the_powers_of_ten_istio_uses() {
        let computed: Vec<f64> =
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 10.0, 9).collect();
        assert_eq!(BYTES_BUCKETS.to_vec(), computed);
    }

    #[test]
    fn service_hosts_split_into_name_and_namespace_only_for_kubernetes_names() {
        assert_eq!(
            service_name_and_namespace("reviews.shop.svc.cluster.local"),
            ("reviews", "shop")
        );
        assert_eq!(
            service_name_and_namespace("api.example.com"),
            ("api.example.com", "unknown")
        );
        assert_eq!(service_name_and_namespace(""), ("unknown", "unknown"));
    }

    #[test]
    fn exposition_uses_istio_metric_names() {
        let m = Metrics::default();
        let service = service_of_cluster("outbound|9080||reviews.default.svc.cluster.local");
        let labels = RequestLabels::new(
            Side::unknown(),
            Side::unknown(),
            RequestFacts {
                reporter: "source",
                service: &service,
                protocol: "http",
                status: 200,
                grpc_status: None,
                flags: "-",
                mtls: false,
            },
        );
        m.record_request(&labels, 3.0, 0, 10);
        // A series looked up once records into the same counters.
        let series = m.request_series(&labels);
        series.record(1.0, 0, 10);
        let tcp = TcpLabels::new("source", Side::unknown(), Side::unknown(), "db", "-", false);
        m.tcp_opened(&tcp);
        m.tcp_closed(&tcp, 5, 7);
        let text = m.encode();
        for name in [
            "istio_requests_total{",
            "istio_request_duration_milliseconds_bucket{",
            "istio_request_bytes_bucket{",
            "istio_response_bytes_bucket{",
            "istio_tcp_sent_bytes_total{",
            "istio_tcp_received_bytes_total{",
            "istio_tcp_connections_opened_total{",
            "istio_tcp_connections_closed_total{",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        for label in [
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "source_canonical_revision=\"latest\"",
            "request_protocol=\"http\"",
            "grpc_response_status=\"-\"",
            "request_protocol=\"tcp\"",
        ] {
            assert!(text.contains(label), "{label} missing in\n{text}");
        }
        let total = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .and_then(|l| l.rsplit(' ').next());
        assert_eq!(total, Some("2"), "{text}");
    }
}
