//! The management API over real HTTP, against an in-process meshd.

mod common;

use clap::Parser;
use common::call;
use mesh_control::config::Config;

const DOCS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
";

async fn start(dir: &std::path::Path) -> mesh_control::server::Running {
    let config = Config::parse_from([
        "meshd",
        "--data-dir",
        dir.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--ca-addr",
        "127.0.0.1:0",
        "--xds-addr",
        "127.0.0.1:0",
    ]);
    mesh_control::server::start(&config).await.unwrap()
}

#[tokio::test]
async fn apply_get_list_delete_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let meshd = start(dir.path()).await;
    let addr = meshd.http_addr;
    let (status, body) = call(addr, "POST", "/apis/v1/apply", DOCS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "created");
    let (status, body) = call(addr, "GET", "/apis/v1/vs/default/reviews", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["metadata"]["generation"], 1);
    let (_, body) = call(
        addr,
        "GET",
        "/apis/v1/destinationrules?namespace=default",
        "",
    )
    .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (status, _) = call(addr, "DELETE", "/apis/v1/vs/default/reviews", "").await;
    assert_eq!(status, 200);
    let (status, body) = call(addr, "GET", "/apis/v1/vs/default/reviews", "").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("meshctl get"));
}

#[tokio::test]
async fn invalid_apply_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let meshd = start(dir.path()).await;
    let bad = format!(
        "{DOCS}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: x}}\nspec: {{hostz: [a]}}\n"
    );
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("hostz"));
    let (_, body) = call(meshd.http_addr, "GET", "/apis/v1/all", "").await;
    assert!(body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn watch_streams_changes_as_ndjson() {
    use http_body_util::BodyExt;
    let dir = tempfile::tempdir().unwrap();
    let meshd = start(dir.path()).await;
    let addr = meshd.http_addr;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/apis/v1/watch"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut resp = send.send_request(req).await.unwrap();
    call(addr, "POST", "/apis/v1/apply", DOCS).await;
    let frame = resp.body_mut().frame().await.unwrap().unwrap();
    let line = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(line.contains("\"ADDED\""), "{line}");
}

#[tokio::test]
async fn config_dir_mode_serves_files_read_only() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("se.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend}\nspec: {hosts: [backend], ports: [{number: 80, name: http}]}\n",
    )
    .unwrap();
    let config = Config::parse_from([
        "meshd",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--config-dir",
        files.path().to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--ca-addr",
        "127.0.0.1:0",
        "--xds-addr",
        "127.0.0.1:0",
    ]);
    let meshd = mesh_control::server::start(&config).await.unwrap();
    let (_, body) = call(meshd.http_addr, "GET", "/debug/registryz", "").await;
    let vip = body["services"]["backend.default.svc.cluster.local"]["vip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(vip.starts_with("240.240."), "{vip}");
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", DOCS).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].as_str().unwrap().contains("read-only"));
}
