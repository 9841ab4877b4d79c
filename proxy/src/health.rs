//! The pod-facing status ports: the health port (15021: `/healthz/ready`
//! and the app's rewritten probes under `/app-health/...`) and the merged
//! metrics port (15020: `/stats/prometheus`, the proxy's metrics followed by
//! the app's, scraped from the port and path of the app's own
//! `prometheus.io/*` annotations).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::admin::{self, Role};
use crate::app_probe::{self, AppProbers};
use crate::http::flags::{ProxyBody, text};
use crate::runtime::Shared;

/// Where the app exposes its own Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    /// Port on loopback.
    pub port: u16,
    /// Path (default `/metrics`).
    pub path: String,
}

#[derive(Deserialize)]
struct Annotations {
    scrape: Option<String>,
    port: Option<String>,
    path: Option<String>,
}

impl AppMetrics {
    /// From Istio's annotation JSON (`ISTIO_PROMETHEUS_ANNOTATIONS` format:
    /// `{"scrape":"true","port":"9090","path":"/metrics"}`, the app's
    /// original `prometheus.io/*` values). None when scraping is off or no
    /// port is given.
    pub fn from_annotations(json: &str) -> Result<Option<Self>, serde_json::Error> {
        if json.trim().is_empty() {
            return Ok(None);
        }
        let a: Annotations = serde_json::from_str(json)?;
        if a.scrape.as_deref().is_some_and(|s| s != "true") {
            return Ok(None);
        }
        Ok(a.port.and_then(|p| p.parse().ok()).map(|port| Self {
            port,
            path: a
                .path
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/metrics".into()),
        }))
    }
}

/// One HTTP/1.1 GET to `host:port path` with `headers`, bounded by
/// `timeout`: the status and the body.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    http_request(http::Method::GET, host, port, path, headers, timeout).await
}

/// One HTTP/1.1 request without a body to `host:port path`, bounded by
/// `timeout`: the status and the body.
pub async fn http_request(
    method: http::Method,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let fetch = async {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http {host}:{port}: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{host}:{port}"));
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request for {path}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("http {host}:{port}{path}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("http {host}:{port}{path}: body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("http {host}:{port}{path}: timed out after {timeout:?}"))?
}

/// The proxy's OpenMetrics text followed by the app's Prometheus text. The
/// proxy's `# EOF` terminator is dropped (it would end the document before
/// the app's families); on a scrape failure a comment says why and only the
/// proxy's metrics are served, as Istio's agent does.
pub fn merge(proxy: &str, app: Result<&str, &str>) -> String {
    let mut out = String::with_capacity(proxy.len() + 1024);
    for line in proxy.lines().filter(|l| *l != "# EOF") {
        out.push_str(line);
        out.push('\n');
    }
    match app {
        Ok(app) => {
            out.push_str(app.trim_end_matches('\n'));
            if !app.is_empty() {
                out.push('\n');
            }
        }
        Err(why) => {
            out.push_str("# app metrics unavailable: ");
            out.push_str(&why.replace('\n', " "));
            out.push('\n');
        }
    }
    out
}

async fn serve_with<F, Fut>(tcp: TcpListener, what: &'static str, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send,
{
    loop {
        let (stream, _) = match tcp.accept().await {
            Ok(c) => c,
            Err(error) => {
                warn!(port = what, %error, "accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                debug!(port = what, %error, "connection ended with an error");
            }
        });
    }
}

/// Serves the health port: `/app-health/...` probes the app per
/// `probers`; everything else is the admin module's health role
/// (`/healthz/ready`).
pub async fn serve_health(tcp: TcpListener, shared: Arc<Shared>, probers: Arc<AppProbers>) {
    serve_with(tcp, "health", move |req: Request<Incoming>| {
        let shared = shared.clone();
        let probers = probers.clone();
        async move {
            let path = req.uri().path();
            if !path.starts_with("/app-health/") {
                return admin::respond(Role::Health, &req, &shared);
            }
            let Some(prober) = probers.0.get(path) else {
                return text(StatusCode::NOT_FOUND, format!("no app prober for {path}\n"));
            };
            match app_probe::probe(prober).await {
                Ok(()) => text(StatusCode::OK, "OK\n"),
                Err(why) => {
                    debug!(path, %why, "app probe failed");
                    text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
                }
            }
        }
    })
    .await;
}

/// Serves merged metrics on `/stats/prometheus`.
pub async fn serve_merged(tcp: TcpListener, shared: Arc<Shared>, app: Option<AppMetrics>) {
    serve_with(tcp, "merged-metrics", move |req: Request<Incoming>| {
        let shared = shared.clone();
        let app = app.clone();
        async move {
            if req.uri().path() != "/stats/prometheus" {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            let proxy = shared.metrics.encode();
            let body = match &app {
                None => merge(&proxy, Ok("")),
                Some(a) => {
                    let scraped =
                        http_get("127.0.0.1", a.port, &a.path, &[], Duration::from_secs(5)).await;
                    match scraped {
                        Ok((status, body)) if status.is_success() => {
                            merge(&proxy, Ok(&String::from_utf8_lossy(&body)))
                        }
                        Ok((status, _)) => merge(&proxy, Err(&format!("status {status}"))),
                        Err(why) => merge(&proxy, Err(&why)),
                    }
                }
            };
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metrics_come_from_the_annotation_json() {
        let a = AppMetrics::from_annotations(r#"{"scrape":"true","port":"9090"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(a.port, 9090);
        assert_eq!(a.path, "/metrics");
        let a = AppMetrics::from_annotations(r#"{"port":"8080","path":"/m"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(a.path, "/m");
        assert!(
            AppMetrics::from_annotations(r#"{"scrape":"false","port":"1"}"#)
                .unwrap()
                .is_none()
        );
        assert!(AppMetrics::from_annotations("").unwrap().is_none());
        assert!(AppMetrics::from_annotations("{").is_err());
    }

    #[test]
    fn merge_drops_the_proxy_eof_and_appends_the_app_or_why_not() {
        let proxy = "# TYPE a counter\na_total 1\n# EOF\n";
        assert_eq!(
            merge(proxy, Ok("app_up 1\n")),
            "# TYPE a counter\na_total 1\napp_up 1\n"
        );
        let failed = merge(proxy, Err("connect 127.0.0.1:9: refused"));
        assert!(failed.ends_with("# app metrics unavailable: connect 127.0.0.1:9: refused\n"));
        assert!(!failed.contains("# EOF"));
    }
}
