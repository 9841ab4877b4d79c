//! Istio's standard metrics (names and labels as Istio's dashboards expect),
//! on prometheus-client with typed label sets.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the HTTP request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: String,
    /// Calling workload.
    pub source_workload: String,
    /// Calling identity (SPIFFE ID) or `unknown`.
    pub source_principal: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination workload.
    pub destination_workload: String,
    /// HTTP status.
    pub response_code: String,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: String,
}

/// Labels of the TCP metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: String,
    /// Calling workload.
    pub source_workload: String,
    /// Calling identity or `unknown`.
    pub source_principal: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination workload.
    pub destination_workload: String,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // Istio's default buckets for istio_request_duration_milliseconds.
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn bytes_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 10.0, 9))
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
    fn exposition_uses_istio_metric_names() {
        let m = Metrics::default();
        let labels = RequestLabels {
            reporter: "source".into(),
            source_workload: "productpage-v1".into(),
            source_principal: "unknown".into(),
            destination_service: service_of_cluster(
                "outbound|9080||reviews.default.svc.cluster.local",
            ),
            destination_workload: "unknown".into(),
            response_code: "200".into(),
            response_flags: "-".into(),
            connection_security_policy: "unknown".into(),
        };
        m.record_request(&labels, 3.0, 0, 10);
        // A series looked up once records into the same counters.
        let series = m.request_series(&labels);
        series.record(1.0, 0, 10);
        let tcp = TcpLabels {
            reporter: "source".into(),
            source_workload: "a".into(),
            source_principal: "unknown".into(),
            destination_service: "db".into(),
            destination_workload: "unknown".into(),
            response_flags: "-".into(),
            connection_security_policy: "unknown".into(),
        };
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
        assert!(text.contains("destination_service=\"reviews.default.svc.cluster.local\""));
        let total = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .and_then(|l| l.rsplit(' ').next());
        assert_eq!(total, Some("2"), "{text}");
    }
}
