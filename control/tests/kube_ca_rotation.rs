//! A root rotation of meshd's embedded CA (what a replaced `cacerts`
//! Secret becomes in Kubernetes mode, once written into the CA directory)
//! on the real meshd: new handshakes on the TLS port (15012) get a serving
//! certificate chained to the new root, without a restart, while an xDS
//! stream opened before over mTLS keeps receiving config, and `/debug/ca`
//! shows both roots.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{call, open_delta};
use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use rustls::pki_types::{CertificateDer, ServerName};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

fn entry(name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  ports: [{{number: 80, name: http}}]
  endpoints: [{{address: 127.0.0.1}}]
"
    )
}

fn node(id: &str) -> Option<Node> {
    use mesh_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    Some(Node {
        id: id.into(),
        cluster: "test".into(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), s("shop")),
                ("SERVICE_ACCOUNT".to_string(), s("reviews")),
            ]
            .into(),
        }),
        ..Default::default()
    })
}

/// Whether a TLS client trusting only `root` completes a handshake with
/// `addr` under the CA's server name.
async fn handshake_trusting(addr: std::net::SocketAddr, root: &CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("mesh-ca").unwrap(), tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_rotated_root_reaches_new_handshakes_on_the_tls_port_while_an_open_xds_stream_keeps_working()
 {
    mesh_control::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let meshd = common::start_meshd(dir.path()).await;
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &entry("first")).await;
    assert_eq!(status, 200, "{body}");
    let ca_dir = dir.path().join("ca");
    let policy = mesh_ca::IssuePolicy::default();
    let ca = mesh_ca::CertificateAuthority::load(&ca_dir, Some("cluster.local"), policy).unwrap();
    let old_root = ca.trust_bundle().roots()[0].clone();
    assert!(handshake_trusting(meshd.ca_addr, &old_root).await);

    // An xDS stream over mTLS, open before the rotation.
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let svid = ca
        .issue_with_new_key(
            &"spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap(),
            None,
        )
        .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.trust_bundle().pem()))
        .identity(Identity::from_pem(
            svid.cert.chain_pem.concat(),
            svid.key_pem,
        ))
        .domain_name("mesh-ca");
    let channel = Endpoint::from_shared(format!("https://{}", meshd.ca_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, mut stream) = open_delta(
        &mut client,
        DeltaDiscoveryRequest {
            node: node("reviews-1"),
            type_url: CDS.into(),
            ..Default::default()
        },
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tx.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Both rotation steps in the CA directory; meshd checks it every 10 s.
    let rotated = mesh_ca::CertificateAuthority::rotate_root(&ca_dir, policy).unwrap();
    let new_root = rotated
        .trust_bundle()
        .roots()
        .iter()
        .find(|r| **r != old_root)
        .unwrap()
        .clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !handshake_trusting(meshd.ca_addr, &new_root).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "15012 never presented a chain to the new root"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // /debug/ca shows both roots now (it followed the CA, as does the
    // root-expiry metric).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, ca_info) = call(meshd.http_addr, "GET", "/debug/ca", "").await;
        assert_eq!(status, 200, "{ca_info}");
        if ca_info["roots"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/debug/ca still shows the CA loaded at start: {ca_info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The stream opened before still gets config pushes.
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &entry("second")).await;
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pushed = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("no push of `second` on the stream opened before the rotation")
            .unwrap()
            .unwrap();
        if pushed.resources.iter().any(|r| r.name.contains("|second.")) {
            break;
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: CDS.into(),
            response_nonce: pushed.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}
