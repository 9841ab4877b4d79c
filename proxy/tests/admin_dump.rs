//! The admin `/config_dump` in Envoy's format, fed by the real xDS client
//! from the fake ADS server: accepted resources as received (a rejected one
//! is absent, a removed one disappears), and the secrets without the key.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_proxy::admin::Role;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Shared, WorkloadInfo};
use mesh_proxy::tls::Svid;
use mesh_proxy::xds::{NodeIdentity, XdsClient, XdsClientConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::watch;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// An SVID from a fresh rcgen CA; also returns the key's DER, which the
/// dump must never contain.
fn svid() -> (Svid, Vec<u8>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["reviews".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let root: &rcgen::Certificate = issuer.as_ref();
    let key_der = key.serialize_der();
    (
        Svid {
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(key_der.clone().into()),
            roots: vec![CertificateDer::from(root.der().to_vec())],
        },
        key_der,
    )
}

async fn config_dump(admin: SocketAddr) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // EDS is dumped only with include_eds, as in Envoy.
    let req = hyper::Request::get("/config_dump?include_eds")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<ProxyConfig>>,
    what: &str,
    pred: impl Fn(&ProxyConfig) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| pred(c)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("client gone");
}

fn section<'a>(dump: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{kind}"))
        .unwrap_or_else(|| panic!("no {kind} in {dump}"))
}

fn cluster_names(dump: &serde_json::Value) -> Vec<String> {
    section(dump, "ClustersConfigDump")["dynamic_active_clusters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["cluster"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn admin_config_dump_is_envoys_format_of_the_accepted_resources() {
    mesh_proxy::install_crypto_provider();
    let mut ads = FakeAds::start().await;
    let mut cfg = XdsClientConfig::new(
        ads.url(),
        NodeIdentity {
            namespace: "default".into(),
            workload_name: "productpage-v1".into(),
            instance_ips: vec!["127.0.0.1".into()],
            ..Default::default()
        },
    );
    cfg.initial_backoff = Duration::from_millis(20);
    let (client, mut rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    let (svid, key_der) = svid();
    let (_svid_tx, svid_rx) = watch::channel(Some(Arc::new(svid)));
    let shared = Shared::with_svid(rx.clone(), WorkloadInfo::default(), svid_rx);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    tokio::spawn(mesh_proxy::admin::serve(l, Role::Admin, shared));

    ads.expect_delta("CDS subscribe", |r| r.type_url == CDS())
        .await;
    // A good cluster, a second one, and a bad one (rejected alone).
    let mut bad = eds_cluster("bad", LbPolicy::RoundRobin);
    bad.lb_subset_config = Some(Default::default());
    ads.push_delta(
        &CDS(),
        "c1",
        vec![
            (
                REVIEWS.into(),
                any(&eds_cluster(REVIEWS, LbPolicy::RoundRobin)),
            ),
            (
                "gone".into(),
                any(&eds_cluster("gone", LbPolicy::RoundRobin)),
            ),
            ("bad".into(), any(&bad)),
        ],
        vec![],
    );
    let l = listener(
        "virtualOutbound",
        "127.0.0.1:0".parse().unwrap(),
        true,
        vec![chain(
            REVIEWS,
            Some("10.96.0.1:9080".parse().unwrap()),
            tcp_filter(REVIEWS),
        )],
        None,
    );
    ads.push_delta(
        &LDS(),
        "l1",
        vec![("virtualOutbound".into(), any(&l))],
        vec![],
    );
    ads.push_delta(
        &EDS(),
        "e1",
        vec![(
            REVIEWS.into(),
            any(&cla(REVIEWS, &[("127.0.0.1:9081".parse().unwrap(), 1, 1)])),
        )],
        vec![],
    );
    wait_for(&mut rx, "clusters, listener and endpoints", |c| {
        c.clusters.contains_key(REVIEWS)
            && c.listeners.contains_key("virtualOutbound")
            && c.endpoints.contains_key(REVIEWS)
    })
    .await;

    let dump = config_dump(admin).await;
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    assert_eq!(cluster_names(&dump), ["gone", REVIEWS], "bad was rejected");
    let cds = section(&dump, "ClustersConfigDump");
    assert_eq!(cds["version_info"], "c1");
    let c0 = &cds["dynamic_active_clusters"][0];
    assert_eq!(c0["version_info"], "c1");
    assert_eq!(
        c0["cluster"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert!(c0["last_updated"].as_str().unwrap().ends_with('Z'));
    let lds = section(&dump, "ListenersConfigDump");
    let listener = &lds["dynamic_listeners"][0];
    assert_eq!(listener["name"], "virtualOutbound");
    assert_eq!(
        listener["active_state"]["listener"]["filter_chains"][0]["filters"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    );
    let eds = section(&dump, "EndpointsConfigDump");
    assert_eq!(
        eds["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        REVIEWS
    );

    // Secrets: the chain and the roots as PEM, never the key.
    let secrets = section(&dump, "SecretsConfigDump")["dynamic_active_secrets"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "ROOTCA"]);
    let chain = secrets[0]["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
        .as_str()
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(chain)
        .unwrap();
    assert!(
        String::from_utf8(pem)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert!(secrets[1]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"].is_string());
    let text = dump.to_string();
    assert!(!text.contains("private_key"), "{text}");
    assert!(!text.contains("PRIVATE KEY"));
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(&key_der);
    assert!(!text.contains(&key_b64[..40]), "the key's bytes leaked");

    // A removed cluster leaves the dump with the config.
    ads.push_delta(&CDS(), "c2", vec![], vec!["gone".into()]);
    wait_for(&mut rx, "gone removed", |c| {
        !c.clusters.contains_key("gone")
    })
    .await;
    let dump = config_dump(admin).await;
    assert_eq!(cluster_names(&dump), [REVIEWS]);
}
