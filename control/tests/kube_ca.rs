//! The CA on Kubernetes against a scripted API server: the root and key
//! from the `cacerts` plug-in Secret, from meshd's own `mesh-ca` Secret, or
//! created and saved there (and a lost creation race); the root-cert
//! ConfigMap applied into every namespace by the leader only; proxies'
//! tokens reviewed with TokenReview.

mod kube_support;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use clap::Parser as _;
use http::Method;
use kube_support::{Reply, answer, event, eventually, list, next, pair, serve, status};
use mesh_control::config::Config;
use mesh_control::kube::KubeMode;
use mesh_control::kube::ca::{self, CaSource};
use serde_json::{Value, json};

const SECRETS: &str = "/api/v1/namespaces/mesh-system/secrets";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Secret as the API server returns it, with the files of `dir`.
fn secret_of(name: &str, dir: &Path, files: &[&str]) -> Value {
    let data: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.to_string(), b64(&std::fs::read(dir.join(f)).unwrap())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "mesh-system",
            "uid": "3c9a4b1e-7d2f-4e8a-9b0c-1d2e3f4a5b6c",
            "resourceVersion": "812",
            "creationTimestamp": "2026-11-24T09:00:00Z"
        },
        "data": data,
        "type": "Opaque"
    })
}

/// A throw-away CA directory.
fn new_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mesh_ca::CertificateAuthority::init(
        dir.path(),
        &mesh_ca::InitOptions::new("cluster.local"),
        mesh_ca::IssuePolicy::default(),
    )
    .unwrap();
    dir
}

fn not_found(name: &str) -> Reply {
    Reply::Json(
        404,
        status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    )
}

const ISTIO_FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

#[tokio::test]
async fn the_cacerts_plugin_secret_is_used_as_is() {
    let plugin = new_ca();
    let secret = secret_of("cacerts", plugin.path(), &ISTIO_FILES);
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, move |req| {
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, format!("{SECRETS}/cacerts"));
        Reply::Json(200, secret.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    let got = ca::materialize(&client, "mesh-system", dir.path(), "cluster.local")
        .await
        .unwrap();
    assert_eq!(got, CaSource::Plugin);
    assert_eq!(seen.lock().unwrap().len(), 1);
    let loaded = mesh_ca::CertificateAuthority::load_or_init(
        dir.path(),
        "cluster.local",
        mesh_ca::IssuePolicy::default(),
    )
    .unwrap();
    let want = std::fs::read_to_string(plugin.path().join("root-cert.pem")).unwrap();
    assert_eq!(loaded.trust_bundle().pem().trim(), want.trim());
}

#[tokio::test]
async fn without_a_secret_a_new_ca_is_created_and_saved_as_mesh_ca() {
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, |req| match (&req.method, req.path.as_str()) {
        (&Method::GET, p) if p.ends_with("/cacerts") => not_found("cacerts"),
        (&Method::GET, p) if p.ends_with("/mesh-ca") => not_found("mesh-ca"),
        (&Method::POST, SECRETS) => Reply::Json(201, req.body.clone()),
        _ => panic!("unexpected {req:?}"),
    });
    let dir = tempfile::tempdir().unwrap();
    let got = ca::materialize(&client, "mesh-system", dir.path(), "cluster.local")
        .await
        .unwrap();
    assert_eq!(got, CaSource::Created);
    let seen = seen.lock().unwrap();
    let created = &seen.last().unwrap().body;
    assert_eq!(created["metadata"]["name"], "mesh-ca");
    let root = created["data"]["root-cert.pem"].as_str().unwrap();
    assert_eq!(
        root,
        b64(&std::fs::read(dir.path().join("root-cert.pem")).unwrap()),
        "the Secret holds the CA meshd loads"
    );
    for key in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-key.pem",
        "cert-chain.pem",
    ] {
        assert!(
            created["data"].get(key).is_some(),
            "{key} missing: {created}"
        );
    }
}

#[tokio::test]
async fn the_stored_mesh_ca_secret_replaces_a_stale_local_ca() {
    let stored = new_ca();
    let secret = secret_of(
        "mesh-ca",
        stored.path(),
        &[
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "root-key.pem",
            "cert-chain.pem",
            "trust-domain",
        ],
    );
    let (client, handle) = pair();
    let _server = serve(handle, move |req| {
        if req.path.ends_with("/cacerts") {
            not_found("cacerts")
        } else {
            Reply::Json(200, secret.clone())
        }
    });
    // The pod's data dir still has the CA of an earlier, unsaved run.
    let dir = new_ca();
    let got = ca::materialize(&client, "mesh-system", dir.path(), "cluster.local")
        .await
        .unwrap();
    assert_eq!(got, CaSource::Stored);
    assert_eq!(
        std::fs::read(dir.path().join("ca-key.pem")).unwrap(),
        std::fs::read(stored.path().join("ca-key.pem")).unwrap()
    );
    assert!(
        !dir.path().join("trust-bundle.pem").exists(),
        "files the Secret lacks are removed"
    );
}

#[tokio::test]
async fn the_replica_that_loses_the_creation_race_takes_the_winners_ca() {
    let winner = new_ca();
    let secret = secret_of("mesh-ca", winner.path(), &ISTIO_FILES);
    let (client, handle) = pair();
    let gets = std::sync::atomic::AtomicUsize::new(0);
    let _server = serve(handle, move |req| match req.method {
        Method::POST => Reply::Json(
            409,
            status(409, "AlreadyExists", "secrets \"mesh-ca\" already exists"),
        ),
        _ if req.path.ends_with("/cacerts") => not_found("cacerts"),
        // The first read of mesh-ca finds nothing, the one after the race finds the winner's.
        _ if gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => not_found("mesh-ca"),
        _ => Reply::Json(200, secret.clone()),
    });
    let dir = tempfile::tempdir().unwrap();
    let got = ca::materialize(&client, "mesh-system", dir.path(), "cluster.local")
        .await
        .unwrap();
    assert_eq!(got, CaSource::Stored);
    assert_eq!(
        std::fs::read(dir.path().join("root-cert.pem")).unwrap(),
        std::fs::read(winner.path().join("root-cert.pem")).unwrap()
    );
}

#[tokio::test]
async fn the_root_configmap_is_server_side_applied_by_meshd() {
    let (client, mut handle) = pair();
    let server = tokio::spawn(async move {
        let (req, send) = next(&mut handle).await.unwrap();
        answer(send, Reply::Json(200, req.body.clone()), &mut Vec::new());
        req
    });
    ca::publish_root(
        &client,
        "mesh-ca-root-cert",
        "shop",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .await
    .unwrap();
    let req = server.await.unwrap();
    assert_eq!(req.method, Method::PATCH);
    assert_eq!(
        req.path,
        "/api/v1/namespaces/shop/configmaps/mesh-ca-root-cert"
    );
    assert_eq!(req.q("fieldManager"), Some("meshd"));
    assert_eq!(req.q("force"), Some("true"));
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(req.body["apiVersion"], "v1");
    assert_eq!(req.body["kind"], "ConfigMap");
    assert_eq!(req.body["metadata"]["namespace"], "shop");
    assert!(
        req.body["data"]["root-cert.pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
}

fn namespace(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv,
                     "creationTimestamp": "2026-11-24T09:00:00Z",
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_publishes_the_root_to_every_namespace_and_new_ones() {
    let (client, handle) = pair();
    let ns_watches = std::sync::atomic::AtomicUsize::new(0);
    let new_namespace = std::sync::Arc::new(tokio::sync::Notify::new());
    let create = new_namespace.clone();
    let (seen, _server) = serve(handle, move |req| match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/v1/namespaces") if !req.is_watch() => Reply::Json(
            200,
            list(
                "v1",
                "Namespace",
                "100",
                vec![namespace("default", "1"), namespace("shop", "2")],
            ),
        ),
        (&Method::GET, "/api/v1/namespaces") => {
            // The first watch reports a namespace when the test creates
            // it; later ones stay open.
            if ns_watches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Reply::After(
                    create.clone(),
                    vec![event("ADDED", namespace("payments", "101"))],
                )
            } else {
                Reply::Hang
            }
        }
        (&Method::GET, "/api/v1/configmaps") if !req.is_watch() => {
            assert_eq!(
                req.q("fieldSelector"),
                Some("metadata.name=mesh-ca-root-cert")
            );
            Reply::Json(200, list("v1", "ConfigMap", "100", vec![]))
        }
        (&Method::GET, "/api/v1/configmaps") => Reply::Hang,
        (&Method::PATCH, _) => Reply::Json(200, req.body.clone()),
        _ => panic!("unexpected {req:?}"),
    });
    let (leader_tx, leader) = tokio::sync::watch::channel(false);
    let (_roots_tx, roots) = tokio::sync::watch::channel("ROOT PEM".to_string());
    let task = ca::spawn_root_publisher(client, "mesh-ca-root-cert".into(), roots, leader);
    let patched = |seen: &std::sync::Mutex<Vec<kube_support::Seen>>| -> Vec<String> {
        let mut v: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::PATCH)
            .map(|r| r.path.clone())
            .collect();
        v.sort();
        v
    };
    // Not leading: namespaces are listed and watched, nothing is written.
    eventually("the namespace watch", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.path == "/api/v1/namespaces" && r.is_watch())
    })
    .await;
    assert!(patched(&seen).is_empty());
    // Leading: every namespace known so far gets the ConfigMap...
    leader_tx.send(true).unwrap();
    eventually("two ConfigMaps", || patched(&seen).len() == 2).await;
    // ...and so does a namespace created later.
    new_namespace.notify_one();
    eventually("three ConfigMaps", || patched(&seen).len() == 3).await;
    assert_eq!(
        patched(&seen),
        [
            "/api/v1/namespaces/default/configmaps/mesh-ca-root-cert",
            "/api/v1/namespaces/payments/configmaps/mesh-ca-root-cert",
            "/api/v1/namespaces/shop/configmaps/mesh-ca-root-cert",
        ]
    );
    task.abort();
}

#[tokio::test]
async fn proxies_tokens_are_reviewed_for_the_mesh_ca_audience_and_trust_domain() {
    let mesh_config = tempfile::tempdir().unwrap();
    std::fs::write(mesh_config.path().join("trustDomain"), "corp.example\n").unwrap();
    let config = Config::parse_from([
        "meshd",
        "--kubernetes",
        "--mesh-config-dir",
        mesh_config.path().to_str().unwrap(),
    ]);
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, |req| {
        Reply::Json(
            201,
            json!({
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": req.body["spec"].clone(),
                "status": {
                    "authenticated": true,
                    "user": {
                        "username": "system:serviceaccount:shop:reviews",
                        "uid": "9f8e7d6c-5b4a-3c2d-1e0f-a1b2c3d4e5f6",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]
                    },
                    "audiences": ["mesh-ca"]
                }
            }),
        )
    });
    let mode = KubeMode::with_client(client, &config);
    let id = mode
        .token_reviewer()
        .authenticate("eyJhbGciOiJSUzI1NiJ9.payload.sig")
        .await
        .unwrap();
    assert_eq!(id.to_string(), "spiffe://corp.example/ns/shop/sa/reviews");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(seen[0].body["spec"]["audiences"], json!(["mesh-ca"]));
}

#[tokio::test]
async fn a_replaced_cacerts_secret_is_written_into_the_ca_directory_once() {
    let old = new_ca();
    let replaced = new_ca();
    let secret = secret_of("cacerts", replaced.path(), &ISTIO_FILES);
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, move |req| {
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, format!("{SECRETS}/cacerts"));
        Reply::Json(200, secret.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    for f in ISTIO_FILES {
        std::fs::copy(old.path().join(f), dir.path().join(f)).unwrap();
    }
    assert!(
        ca::sync_secret(&client, "mesh-system", dir.path())
            .await
            .unwrap()
    );
    for f in ISTIO_FILES {
        assert_eq!(
            std::fs::read(dir.path().join(f)).unwrap(),
            std::fs::read(replaced.path().join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(
        !ca::sync_secret(&client, "mesh-system", dir.path())
            .await
            .unwrap(),
        "unchanged: nothing written"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}
