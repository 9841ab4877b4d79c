//! The pod-facing status features against real apps on 127.0.0.1:0:
//! `/app-health/...` probes on the health port, merged metrics on the
//! status port, and `mesh-proxy drain` against the admin port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mesh_proxy::admin::{self, Role};
use mesh_proxy::app_probe::AppProbers;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::health::{self, AppMetrics, http_get};
use mesh_proxy::runtime::Shared;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// An app answering `/ready` with 200 or 503 (per `healthy`) and
/// `/metrics` with one Prometheus family.
async fn app(healthy: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let healthy = healthy.load(Ordering::SeqCst);
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/ready" if healthy => (StatusCode::OK, "ok"),
                            "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not yet"),
                            "/metrics" => (
                                StatusCode::OK,
                                "# TYPE app_orders_total counter\napp_orders_total 42\n",
                            ),
                            _ => (StatusCode::NOT_FOUND, ""),
                        };
                        let mut r = http::Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn shared() -> Arc<Shared> {
    let (_tx, rx) = watch::channel(Arc::new(ProxyConfig::default()));
    // Keep the sender alive for the test's duration.
    std::mem::forget(_tx);
    Shared::new(rx)
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let (status, body) = http_get("127.0.0.1", addr.port(), path, &[], Duration::from_secs(5))
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn app_health_follows_the_apps_http_and_tcp_probes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let app = app(healthy.clone()).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let probers = AppProbers::parse(&format!(
        r#"{{"/app-health/app/readyz":{{"httpGet":{{"path":"/ready","port":{}}},"timeoutSeconds":1}},
            "/app-health/app/livez":{{"tcpSocket":{{"port":{}}}}},
            "/app-health/gone/livez":{{"tcpSocket":{{"port":{}}}}}}}"#,
        app.port(),
        app.port(),
        closed.port()
    ))
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = l.local_addr().unwrap();
    tokio::spawn(health::serve_health(l, shared(), Arc::new(probers)));

    let (status, body) = get(health, "/app-health/app/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("503"), "{body}");
    healthy.store(true, Ordering::SeqCst);
    assert_eq!(
        get(health, "/app-health/app/readyz").await.0,
        StatusCode::OK
    );
    assert_eq!(get(health, "/app-health/app/livez").await.0, StatusCode::OK);
    assert_eq!(
        get(health, "/app-health/gone/livez").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(health, "/app-health/nope/livez").await.0,
        StatusCode::NOT_FOUND
    );
    // The proxy's own readiness is still served on the same port.
    assert_eq!(
        get(health, "/healthz/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "no config yet"
    );
}

#[tokio::test]
async fn merged_metrics_hold_the_proxy_and_the_app_families() {
    let app = app(Arc::new(AtomicBool::new(true))).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status_port = l.local_addr().unwrap();
    let app_metrics = AppMetrics::from_annotations(&format!(
        r#"{{"scrape":"true","port":"{}","path":"/metrics"}}"#,
        app.port()
    ))
    .unwrap();
    let proxy = shared();
    proxy
        .metrics
        .tcp_opened(&mesh_proxy::metrics::TcpLabels::new(
            "source",
            mesh_proxy::metrics::Side::unknown(),
            mesh_proxy::metrics::Side::unknown(),
            "s",
            "-",
            false,
        ));
    tokio::spawn(health::serve_merged(l, proxy, app_metrics));
    let (status, body) = get(status_port, "/stats/prometheus").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("istio_tcp_connections_opened"), "{body}");
    assert!(body.contains("app_orders_total 42"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");

    // The app gone: the proxy's metrics still come, with the reason.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lonely = l.local_addr().unwrap();
    let dead = AppMetrics {
        port: lonely.port(),
        path: "/metrics".into(),
    };
    drop(l);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status_port = l.local_addr().unwrap();
    tokio::spawn(health::serve_merged(l, shared(), Some(dead)));
    let (status, body) = get(status_port, "/stats/prometheus").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("# app metrics unavailable"), "{body}");
}

#[tokio::test]
async fn drain_stops_accepting_and_waits_for_open_connections() {
    let shared = shared();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = l.local_addr().unwrap();
    tokio::spawn(admin::serve(l, Role::Admin, shared.clone()));

    // No connection open: drained at once.
    let left = mesh_proxy::drain::drain(admin_addr.port(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(*shared.draining.borrow());

    // One connection that closes after a moment: drain waits for it.
    let guard = shared.connection_guard();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(guard);
    });
    let started = std::time::Instant::now();
    let left = mesh_proxy::drain::drain(admin_addr.port(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    release.await.unwrap();

    // A connection that never closes: drain gives up at the timeout.
    let _stuck = shared.connection_guard();
    let left = mesh_proxy::drain::drain(admin_addr.port(), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(left, 1);

    // No admin listening: a clear error.
    let err = mesh_proxy::drain::drain(1, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("admin port"), "{err}");
}
