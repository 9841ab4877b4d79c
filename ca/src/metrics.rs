//! Prometheus metrics (prometheus-client) of the CA server and of the
//! workload client, each registered under its own prefixed sub-registry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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

/// Content type of the Prometheus text format with OpenMetrics.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn render(registry: &Registry, path: &str) -> Response<Full<Bytes>> {
    let mut body = String::new();
    let (status, ctype) = if path != "/metrics" {
        body.push_str("not found: metrics are at /metrics\n");
        (StatusCode::NOT_FOUND, "text/plain")
    } else if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        body = "encoding metrics failed\n".to_string();
        (StatusCode::INTERNAL_SERVER_ERROR, "text/plain")
    } else {
        (StatusCode::OK, CONTENT_TYPE)
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Serves `registry` at `GET /metrics` over HTTP/1 on `listener` until
/// `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = render(&registry, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
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

    #[tokio::test]
    async fn metrics_endpoint_serves_the_registry() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut registry = Registry::default();
        let ca = CaMetrics::register(&mut registry);
        ca.issued.inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, Arc::new(registry), async {
            let _ = stopped.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("mesh_ca_svids_issued_total 1"), "{out}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
