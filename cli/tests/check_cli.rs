//! `meshctl check` (the real binary) against a stand-in meshd serving
//! recorded `/debug/syncz` and `/debug/ca` answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A meshd stand-in: `syncz` and `ca` are served as JSON.
async fn fake_meshd(syncz: serde_json::Value, ca: serde_json::Value) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new((syncz.to_string(), ca));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let bodies = bodies.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/debug/syncz" => bodies.0.clone(),
                            "/debug/ca" => {
                                let mut ca = bodies.1.clone();
                                let ms = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .unwrap()
                                    .as_millis() as u64;
                                ca["now_ms"] = ms.into();
                                ca.to_string()
                            }
                            _ => "{}".into(),
                        };
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn syncz(state: &str) -> serde_json::Value {
    serde_json::json!({
        "control_plane": format!("meshd {}", env!("CARGO_PKG_VERSION")),
        "proxies": [{
            "name": "reviews-v1.default",
            "states": {"CDS": "SYNCED", "LDS": state, "EDS": "SYNCED", "RDS": "NOT SENT"}
        }]
    })
}

fn ca() -> serde_json::Value {
    serde_json::json!({
        "trust_domain": "cluster.local",
        "roots": [{"subject": "O=cluster.local", "serial": "01",
                   "not_before": now_secs() - 3600, "not_after": now_secs() + 3650 * 86_400}]
    })
}

async fn meshctl(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(args)
            .env_remove("MESHD_ADDR")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_healthy_mesh() {
    let addr = fake_meshd(syncz("SYNCED"), ca()).await;
    let (code, out) = meshctl(vec!["check".into(), "--meshd".into(), addr.to_string()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("√ meshd is reachable"), "{out}");
    assert!(out.contains("√ CA root certificate is valid"), "{out}");
    assert!(out.contains("√ proxies are SYNCED"), "{out}");
    assert!(out.contains("√ clock skew"), "{out}");
    // meshd cannot know the proxies' certificates: a warning, not a failure.
    assert!(out.contains("‼ proxy certificates are valid"), "{out}");
    assert!(out.contains("Status check results are √"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_rejected_config_fails_the_check_with_a_hint() {
    let addr = fake_meshd(syncz("ERROR"), ca()).await;
    let (code, out) = meshctl(vec!["check".into(), "--meshd".into(), addr.to_string()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("× proxies are SYNCED: rejected config: reviews-v1.default LDS"),
        "{out}"
    );
    assert!(out.contains("hint: meshctl proxy-status <name>"), "{out}");
    assert!(out.contains("Status check results are ×"), "{out}");

    let (code, json) = meshctl(vec![
        "check".into(),
        "-o".into(),
        "json".into(),
        "--meshd".into(),
        addr.to_string(),
    ])
    .await;
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["success"], false);
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["outcome"] == "error" && c["name"] == "proxies are SYNCED")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_meshd_fails_with_how_to_start_it() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = meshctl(vec![
        "check".into(),
        "--meshd".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("× meshd is reachable"), "{out}");
    assert!(out.contains("hint: start meshd"), "{out}");
}
