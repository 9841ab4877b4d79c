//! `proxy-status`, `proxy-config` and `check` through the Kubernetes API
//! server's service proxy: the exact paths the API server is asked (a
//! tower-test mock behind a `kube::Client`, and the real binary against a
//! plain-HTTP stand-in named by `--kubeconfig`/`--context`), the same
//! rendering as the direct path, and a readable 503.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::Body;
use mesh_cli::access::MeshdAccess;
use mesh_cli::check::{Outcome, run_checks};
use mesh_cli::proxy_config::tables::Filter;
use mesh_cli::proxy_config::{Format, Kind, fetch_from_meshd, render};
use mesh_cli::resources::Output;
use mesh_cli::status;

const PREFIX: &str = "/api/v1/namespaces/mesh-system/services/meshd:15014/proxy";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn syncz() -> serde_json::Value {
    serde_json::json!({
        "control_plane": format!("meshd {}", env!("CARGO_PKG_VERSION")),
        "proxies": [{
            "name": "reviews-v1.default",
            "node": {"id": "sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local",
                     "cluster": "reviews", "version": "0.1.0"},
            "states": {"CDS": "SYNCED", "LDS": "SYNCED", "EDS": "SYNCED", "RDS": "SYNCED"}
        }]
    })
}

fn ca() -> serde_json::Value {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    serde_json::json!({
        "trust_domain": "cluster.local",
        "now_ms": ms,
        "roots": [{"subject": "O=cluster.local", "serial": "01",
                   "not_before": now_secs() - 3600, "not_after": now_secs() + 3650 * 86_400}]
    })
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/proxy_config")
        .join(name)
}

fn config_dump() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden("meshd_dump.json")).unwrap()).unwrap()
}

/// meshd's answer to a debug path (without the API server's prefix).
fn meshd_answer(path_and_query: &str) -> (u16, String) {
    match path_and_query {
        "/debug/syncz" => (200, syncz().to_string()),
        "/debug/ca" => (200, ca().to_string()),
        "/debug/config_dump?proxyID=reviews-v1.default" => (200, config_dump().to_string()),
        _ => (404, r#"{"error":"not found"}"#.into()),
    }
}

/// A `kube::Client` over tower-test's mock; every request's path and
/// query is recorded, and answered by `reply`.
fn mock(
    reply: impl Fn(&str) -> (u16, String) + Send + 'static,
) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let pq = req.uri().path_and_query().unwrap().to_string();
            record.lock().unwrap().push(pq.clone());
            let (code, body) = reply(&pq);
            let mut res = Response::new(Body::from(body.into_bytes()));
            *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
            send.send_response(res);
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

/// An API server whose service proxy reaches a healthy meshd.
fn api_server() -> (MeshdAccess, Arc<Mutex<Vec<String>>>) {
    let (client, seen) = mock(|pq| match pq.strip_prefix(PREFIX) {
        Some(rest) => meshd_answer(rest),
        None => (
            404,
            r#"{"kind":"Status","code":404,"message":"nope"}"#.into(),
        ),
    });
    (MeshdAccess::ApiServer(client, "mesh-system".into()), seen)
}

/// An API server whose meshd Service has no ready pod.
fn api_server_without_meshd() -> MeshdAccess {
    let (client, _) = mock(|_| {
        let status = serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},
            "status":"Failure","message":"no endpoints available for service \"meshd\"",
            "reason":"ServiceUnavailable","code":503});
        (503, status.to_string())
    });
    MeshdAccess::ApiServer(client, "mesh-system".into())
}

/// A plain-HTTP server on 127.0.0.1:0 answering with `reply`; it records
/// every path and query.
async fn http_server(
    reply: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (reply, record) = (reply.clone(), record.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<_>| {
                    let pq = req.uri().path_and_query().unwrap().to_string();
                    record.lock().unwrap().push(pq.clone());
                    let (code, body) = reply(&pq);
                    let mut res = Response::new(Full::new(Bytes::from(body)));
                    *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// meshd reached directly, serving the same recorded answers.
async fn direct() -> MeshdAccess {
    let (addr, _) = http_server(meshd_answer).await;
    MeshdAccess::Direct(addr.to_string())
}

#[tokio::test]
async fn proxy_status_asks_the_service_proxy_and_renders_as_direct() {
    let (access, seen) = api_server();
    let via_api = status::fetch(&access).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [format!("{PREFIX}/debug/syncz")]);
    let via_direct = status::fetch(&direct().await).await.unwrap();
    let table = status::render(&via_api, None, Output::Table).unwrap();
    assert_eq!(
        table,
        status::render(&via_direct, None, Output::Table).unwrap()
    );
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", table.stdout);
    assert!(
        lines[1].starts_with("reviews-v1.default   reviews   SYNCED"),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn proxy_config_asks_the_service_proxy_for_the_proxys_dump() {
    let (access, seen) = api_server();
    let dump = fetch_from_meshd(&access, "reviews-v1.default")
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [format!(
            "{PREFIX}/debug/config_dump?proxyID=reviews-v1.default"
        )]
    );
    let direct_dump = fetch_from_meshd(&direct().await, "reviews-v1.default")
        .await
        .unwrap();
    let all = Filter::default();
    for kind in [
        Kind::Clusters,
        Kind::Listeners,
        Kind::Routes,
        Kind::Endpoints,
    ] {
        let a = render(&dump, kind, Format::Short, &all, 0, None).unwrap();
        assert_eq!(
            a,
            render(&direct_dump, kind, Format::Short, &all, 0, None).unwrap()
        );
    }
    // The same table as the golden file of the direct path.
    let clusters = render(&dump, Kind::Clusters, Format::Short, &all, 0, None).unwrap();
    assert_eq!(
        clusters,
        std::fs::read_to_string(golden("clusters.txt")).unwrap()
    );
}

#[tokio::test]
async fn proxy_config_of_an_unknown_proxy_reports_meshds_answer() {
    let (access, _) = api_server();
    let err = fetch_from_meshd(&access, "nope.default")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "meshd answered 404: not found");
}

#[tokio::test]
async fn check_asks_syncz_then_ca_and_judges_as_direct() {
    let (access, seen) = api_server();
    let report = run_checks(&access).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("{PREFIX}/debug/syncz"),
            format!("{PREFIX}/debug/ca")
        ]
    );
    assert!(report.success, "{}", report.text());
    assert!(
        report
            .text()
            .contains("meshd (service meshd:15014 in namespace mesh-system, via the API server)"),
        "{}",
        report.text()
    );
    let direct = run_checks(&direct().await).await;
    let outcomes = |r: &mesh_cli::check::Report| {
        r.checks
            .iter()
            .map(|c| (c.name.clone(), c.outcome))
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&report), outcomes(&direct));
}

#[tokio::test]
async fn no_meshd_endpoints_say_which_service_and_namespace_and_what_to_do() {
    let access = api_server_without_meshd();
    let err = status::fetch(&access).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "the Kubernetes API server could not reach service meshd in namespace mesh-system \
         (503: no endpoints available for service \"meshd\"); is meshd running there \
         (kubectl -n mesh-system get pods)? pass --mesh-namespace if the mesh is installed \
         elsewhere, or --meshd ADDR"
    );
    let report = run_checks(&access).await;
    assert!(!report.success);
    let reach = &report.checks[0];
    assert_eq!(reach.outcome, Outcome::Error);
    assert!(reach.detail.contains("namespace mesh-system"), "{reach:?}");
    assert!(
        reach.hint.as_deref().unwrap().contains("--mesh-namespace"),
        "{reach:?}"
    );
    let dump = fetch_from_meshd(&access, "reviews-v1.default").await;
    assert!(
        dump.unwrap_err()
            .to_string()
            .contains("no endpoints available")
    );
}

/// A kubeconfig whose current context is a dead cluster and whose
/// `fake` context is the API server at `addr`.
fn kubeconfig(dir: &tempfile::TempDir, addr: SocketAddr) -> PathBuf {
    let path = dir.path().join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dead\n\
             clusters:\n- name: fake\n  cluster: {{server: \"http://{addr}\"}}\n\
             - name: dead\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: u}}\n\
             - name: dead\n  context: {{cluster: dead, user: u}}\n"
        ),
    )
    .unwrap();
    path
}

async fn meshctl(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(args)
            .env_remove("MESHD_ADDR")
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_uses_kubeconfig_context_and_mesh_namespace() {
    let prefix = "/api/v1/namespaces/istio-x/services/meshd:15014/proxy";
    let (addr, seen) = http_server(move |pq| match pq.strip_prefix(prefix) {
        Some(rest) => meshd_answer(rest),
        None => (
            404,
            r#"{"kind":"Status","code":404,"message":"nope"}"#.into(),
        ),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(&dir, addr).display().to_string();
    let common = |cmd: &[&str]| {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--kubeconfig",
                &config,
                "--context",
                "fake",
                "--mesh-namespace",
                "istio-x",
            ]
            .map(String::from),
        );
        v
    };
    let out = meshctl(common(&["proxy-status"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = status::render(&syncz(), None, Output::Table).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected.stdout);
    let out = meshctl(common(&["proxy-config", "clusters", "reviews-v1.default"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(golden("clusters.txt")).unwrap()
    );
    let out = meshctl(common(&["check"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("{prefix}/debug/syncz"),
            format!("{prefix}/debug/config_dump?proxyID=reviews-v1.default"),
            format!("{prefix}/debug/syncz"),
            format!("{prefix}/debug/ca"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_kubeconfig_is_an_error_not_a_silent_fallback() {
    let out = meshctl(
        ["proxy-status", "--kubeconfig", "/nonexistent/kubeconfig"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use the Kubernetes config"), "{err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}
