//! meshd started in Kubernetes mode against a scripted API server: it
//! creates and saves its CA, lists every custom resource kind and the
//! registry's objects before serving, puts the cluster's Services into its
//! snapshot, serves the CA on 15012 under meshd's Service name, serves the
//! webhooks, and refuses writes through its API.

mod kube_support;

use std::sync::Arc;

use clap::Parser as _;
use http::Method;
use kube_support::{Reply, list, pair, serve, status};
use mesh_control::config::Config;
use mesh_control::kube::KubeMode;
use mesh_control::store::StoreError;
use mesh_model::Kind;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-vs", "resourceVersion": "5", "generation": 3},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-svc", "resourceVersion": "10"},
        "spec": {"clusterIP": "10.96.14.7", "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 9080, "protocol": "TCP", "targetPort": 9080}]}
    })
}

fn route(req: &kube_support::Seen) -> Reply {
    let p = req.path.as_str();
    if req.method == Method::GET && req.is_watch() {
        return Reply::Hang;
    }
    for kind in Kind::ALL {
        let ar = mesh_control::kube::crds::api_resource(kind);
        if p == format!("/apis/{}/{}/{}", ar.group, ar.version, ar.plural) {
            let items = if kind == Kind::VirtualService {
                vec![virtual_service()]
            } else {
                vec![]
            };
            return Reply::Json(200, list(&ar.api_version, kind.as_str(), "50", items));
        }
    }
    match (&req.method, p) {
        (&Method::GET, "/api/v1/services") => {
            Reply::Json(200, list("v1", "Service", "60", vec![service()]))
        }
        (&Method::GET, "/apis/discovery.k8s.io/v1/endpointslices") => Reply::Json(
            200,
            list("discovery.k8s.io/v1", "EndpointSlice", "60", vec![]),
        ),
        (
            &Method::GET,
            "/api/v1/pods" | "/api/v1/nodes" | "/api/v1/namespaces" | "/api/v1/configmaps",
        ) => Reply::Json(200, list("v1", "List", "60", vec![])),
        (&Method::POST, "/api/v1/namespaces/mesh-system/secrets") => {
            Reply::Json(201, req.body.clone())
        }
        (&Method::POST, _) => Reply::Json(201, req.body.clone()),
        _ => Reply::Json(404, status(404, "NotFound", "not found")),
    }
}

#[tokio::test]
async fn meshd_starts_on_the_cluster_and_serves_its_services() {
    mesh_control::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let config = Config::parse_from([
        "meshd",
        "--kubernetes",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--xds-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--xds-tls-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        "127.0.0.1:0",
        "--namespace",
        "mesh-system",
        "--pod-name",
        "meshd-0",
    ]);
    let (client, handle) = pair();
    let (seen, _server) = serve(handle, route);
    let kube = KubeMode::with_client(client, &config);
    let running = mesh_control::server::start_with_kube(&config, Some(kube))
        .await
        .unwrap();

    // The CA was created and saved in the mesh-ca Secret.
    assert!(seen.lock().unwrap().iter().any(|r| r.method == Method::POST
        && r.path == "/api/v1/namespaces/mesh-system/secrets"
        && r.body["metadata"]["name"] == "mesh-ca"));

    // The first snapshot already has the custom resources and the Services.
    let snap = running.shared.builder.rebuild().await.unwrap();
    assert_eq!(snap.config.len(), 1, "{:?}", snap.errors);
    let svc = &snap.services["reviews.shop.svc.cluster.local"];
    assert_eq!(svc.vip.to_string(), "10.96.14.7");
    assert!(running.webhook_addr.is_some());

    // Writes through meshd's API are refused.
    let err = running.shared.store.apply(Vec::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err}");

    // Port 15012 presents a certificate for meshd's Service name.
    let root_pem = std::fs::read(data.path().join("ca/root-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&root_pem).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(running.ca_addr)
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("meshd.mesh-system.svc").unwrap(), tcp)
        .await
        .expect("the CA's serving certificate names meshd.mesh-system.svc");
}
