//! meshd's Kubernetes mode serving the admission webhooks: a serving
//! certificate from the embedded CA for meshd's Service names, real
//! `AdmissionReview`s over HTTPS, and (as the elected leader) the CA's root
//! written into the webhook configurations' `caBundle`.

mod kube_support;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use clap::Parser as _;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube_support::{Reply, eventually, list, pair, serve, status};
use mesh_control::config::Config;
use mesh_control::kube::KubeMode;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The recorded reviews the webhook crate's tests use.
fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../webhook/tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn webhook_config(kind: &str, names: &[&str]) -> Value {
    let webhooks: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({
                "name": n,
                "clientConfig": {"service": {"name": "meshd", "namespace": "mesh-system", "path": "/inject", "port": 15017}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "x", "resourceVersion": "300", "uid": "0f0e0d0c-0b0a-0908-0706-050403020100",
                     "generation": 1, "creationTimestamp": "2026-11-24T09:00:00Z"},
        "webhooks": webhooks
    })
}

/// Answers like an API server with an empty cluster, meshd's webhook
/// configurations and no Lease yet.
fn route(req: &kube_support::Seen) -> Reply {
    let p = req.path.as_str();
    match req.method {
        Method::GET if p.ends_with("/leases/meshd-leader") => {
            Reply::Json(404, status(404, "NotFound", "not found"))
        }
        Method::POST if p.ends_with("/leases") => Reply::Json(201, req.body.clone()),
        Method::GET if p.ends_with("/mutatingwebhookconfigurations/mesh-sidecar-injector") => {
            Reply::Json(
                200,
                webhook_config(
                    "MutatingWebhookConfiguration",
                    &[
                        "namespace.sidecar-injector.mesh.dev",
                        "istio-namespace.sidecar-injector.mesh.dev",
                    ],
                ),
            )
        }
        Method::GET if p.ends_with("/validatingwebhookconfigurations/mesh-validator") => {
            Reply::Json(
                200,
                webhook_config("ValidatingWebhookConfiguration", &["validation.mesh.dev"]),
            )
        }
        Method::PUT => Reply::Json(200, req.body.clone()),
        Method::GET if req.is_watch() => Reply::Hang,
        Method::GET if p == "/api/v1/namespaces" => {
            Reply::Json(200, list("v1", "Namespace", "1", vec![]))
        }
        Method::GET if p == "/api/v1/configmaps" => {
            Reply::Json(200, list("v1", "ConfigMap", "1", vec![]))
        }
        _ => Reply::Json(404, status(404, "NotFound", "not found")),
    }
}

async fn post(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
    review: &Value,
) -> (StatusCode, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    // The API server calls the Service by name: the certificate must match.
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("meshd.mesh-system.svc").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("https://meshd.mesh-system.svc{path}?timeout=10s"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(review).unwrap())))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn meshd_serves_the_webhooks_over_https_and_the_leader_patches_the_ca_bundle() {
    mesh_control::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    // The mesh-config ConfigMap as the Deployment mounts it (one file per
    // key), rendered with `--set global.hub=x --set global.tag=y`.
    let mesh_config = data.path().join("mesh-config");
    std::fs::create_dir(&mesh_config).unwrap();
    for (key, value) in [
        ("trustDomain", "cluster.local"),
        ("rootCertConfigMap", "mesh-ca-root-cert"),
        ("proxyImage", "x/mesh-proxy:y"),
    ] {
        std::fs::write(mesh_config.join(key), value).unwrap();
    }
    let config = Config::parse_from([
        "meshd",
        "--kubernetes",
        "--namespace",
        "mesh-system",
        "--pod-name",
        "meshd-0",
        "--webhook-addr",
        "127.0.0.1:0",
        "--mesh-config-dir",
        mesh_config.to_str().unwrap(),
    ]);
    let ca = mesh_ca::CertificateAuthority::load_or_init(
        &data.path().join("ca"),
        "cluster.local",
        mesh_ca::IssuePolicy::default(),
    )
    .unwrap();
    let root_pem = ca.trust_bundle().pem();
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap();
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, route);
    let mode = KubeMode::with_client(client, &config);
    let mut tasks = Vec::new();
    let (_cas_tx, cas) = tokio::sync::watch::channel(Arc::new(ca));
    let started = mode.start_with_ca(cas, &mut tasks).await.unwrap();

    // A pod of a ReplicaSet is injected with meshd's addresses in the pod's view.
    let review = fixture("pod-create-replicaset.json");
    let (code, answer) = post(started.webhook_addr, &root, "/inject", &review).await;
    assert_eq!(code, StatusCode::OK);
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("meshd.mesh-system.svc:15012"), "{patch}");
    // The sidecar image is the install's, from the mesh config.
    let ops: serde_json::Value = serde_json::from_str(&patch).unwrap();
    let mut images = Vec::new();
    collect_images(&ops, &mut images);
    assert!(!images.is_empty(), "{patch}");
    assert!(images.iter().all(|i| i == "x/mesh-proxy:y"), "{images:?}");
    assert!(!patch.contains("mesh/mesh-proxy"), "{patch}");

    // An invalid VirtualService is refused with the model's field path.
    let review = fixture("virtualservice-bad-weight.json");
    let (code, answer) = post(started.webhook_addr, &root, "/validate", &review).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.http[0]"), "{message}");

    // Elected (the Lease was free), meshd writes its root into every webhook.
    let mut leader = started.leader.clone();
    leader.wait_for(|l| *l).await.unwrap();
    eventually("both configurations replaced", || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::PUT)
            .count()
            == 2
    })
    .await;
    let seen = seen.lock().unwrap();
    let puts: Vec<_> = seen.iter().filter(|r| r.method == Method::PUT).collect();
    let want = base64::engine::general_purpose::STANDARD.encode(root_pem.as_bytes());
    let mut paths = Vec::new();
    for put in puts {
        paths.push(put.path.clone());
        assert_eq!(put.body["metadata"]["resourceVersion"], "300");
        for w in put.body["webhooks"].as_array().unwrap() {
            assert_eq!(
                w["clientConfig"]["caBundle"],
                want.as_str(),
                "{}",
                w["name"]
            );
        }
    }
    paths.sort();
    assert_eq!(
        paths,
        [
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mesh-sidecar-injector",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mesh-validator",
        ]
    );
    for t in tasks {
        t.abort();
    }
}

/// Every `image` string anywhere in `v`.
fn collect_images(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_str()) {
                    ("image", Some(image)) => out.push(image.to_string()),
                    _ => collect_images(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_images(x, out)),
        _ => {}
    }
}

/// Whether a TLS client trusting only `root` completes a handshake with the
/// webhook server under meshd's Service name.
async fn handshake_trusting(addr: std::net::SocketAddr, root: &CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("meshd.mesh-system.svc").unwrap(), tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn after_a_root_rotation_the_webhook_chains_to_the_new_root_and_the_ca_bundle_holds_both() {
    mesh_control::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let config = Config::parse_from([
        "meshd",
        "--kubernetes",
        "--namespace",
        "mesh-system",
        "--pod-name",
        "meshd-0",
        "--webhook-addr",
        "127.0.0.1:0",
    ]);
    let dir = data.path().join("ca");
    let policy = mesh_ca::IssuePolicy::default();
    let ca = mesh_ca::CertificateAuthority::load_or_init(&dir, "cluster.local", policy).unwrap();
    let old_root = ca.trust_bundle().roots()[0].clone();
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, route);
    let mode = KubeMode::with_client(client, &config);
    let mut tasks = Vec::new();
    let (cas_tx, cas) = tokio::sync::watch::channel(Arc::new(ca));
    let started = mode.start_with_ca(cas, &mut tasks).await.unwrap();
    assert!(handshake_trusting(started.webhook_addr, &old_root).await);
    let mut leader = started.leader.clone();
    leader.wait_for(|l| *l).await.unwrap();

    // Both rotation steps at once: the new root signs, both are trusted.
    let rotated = mesh_ca::CertificateAuthority::rotate_root(&dir, policy).unwrap();
    assert_eq!(rotated.trust_bundle().roots().len(), 2);
    let new_root = rotated
        .trust_bundle()
        .roots()
        .iter()
        .find(|r| **r != old_root)
        .unwrap()
        .clone();
    let bundle = base64::engine::general_purpose::STANDARD.encode(rotated.trust_bundle().pem());
    cas_tx.send(Arc::new(rotated)).unwrap();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !handshake_trusting(started.webhook_addr, &new_root).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook never presented a chain to the new root"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eventually("both configurations carry the two-root bundle", || {
        let seen = seen.lock().unwrap();
        let patched: Vec<_> = seen
            .iter()
            .filter(|r| r.method == Method::PUT)
            .filter(|r| {
                r.body["webhooks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["clientConfig"]["caBundle"] == bundle.as_str())
            })
            .map(|r| r.path.clone())
            .collect();
        patched.iter().any(|p| p.contains("mutating"))
            && patched.iter().any(|p| p.contains("validating"))
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
