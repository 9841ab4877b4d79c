//! The xDS client against a fake ADS server implementing the real tonic
//! trait: ACK, per-resource NACK, dependent subscriptions, reconnect.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_proxy::config::{Discovery, ProxyConfig};
use mesh_proxy::xds::{NodeIdentity, XdsClient, XdsClientConfig, XdsMode};
use support::*;
use tokio::sync::watch;

fn start_client(ads: &FakeAds, mode: XdsMode) -> watch::Receiver<Arc<ProxyConfig>> {
    let mut cfg = XdsClientConfig::new(
        ads.url(),
        NodeIdentity {
            namespace: "default".into(),
            workload_name: "productpage-v1".into(),
            instance_ips: vec!["127.0.0.1".into()],
            ..Default::default()
        },
    );
    cfg.mode = mode;
    cfg.initial_backoff = Duration::from_millis(20);
    cfg.max_backoff = Duration::from_millis(100);
    let (client, rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    rx
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<ProxyConfig>>,
    what: &str,
    pred: impl Fn(&ProxyConfig) -> bool,
) -> Arc<ProxyConfig> {
    let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| pred(c)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("client gone");
    r.clone()
}

#[tokio::test]
async fn delta_client_acks_subscribes_eds_and_rds_and_publishes_snapshot() {
    let mut ads = FakeAds::start().await;
    let mut rx = start_client(&ads, XdsMode::Delta);
    let first = ads
        .expect_delta("CDS subscribe", |r| r.type_url == CDS())
        .await;
    assert!(
        first
            .node
            .as_ref()
            .unwrap()
            .id
            .starts_with("sidecar~127.0.0.1~productpage-v1.default")
    );
    ads.expect_delta("LDS subscribe", |r| r.type_url == LDS())
        .await;

    let cluster = "outbound|9080||reviews.default.svc.cluster.local";
    ads.push_delta(
        &CDS(),
        "c1",
        vec![(
            cluster.into(),
            any(&eds_cluster(cluster, LbPolicy::RoundRobin)),
        )],
        vec![],
    );
    let ack = ads
        .expect_delta("CDS ACK", |r| {
            r.type_url == CDS() && r.response_nonce == "c1"
        })
        .await;
    assert!(ack.error_detail.is_none());
    let eds = ads
        .expect_delta("EDS subscribe", |r| {
            r.type_url == EDS() && !r.resource_names_subscribe.is_empty()
        })
        .await;
    assert_eq!(eds.resource_names_subscribe, [cluster]);

    let l = listener(
        "virtualOutbound",
        "127.0.0.1:0".parse().unwrap(),
        true,
        vec![chain(
            cluster,
            Some("10.96.0.1:9080".parse().unwrap()),
            hcm_filter("9080"),
        )],
        None,
    );
    ads.push_delta(
        &LDS(),
        "l1",
        vec![("virtualOutbound".into(), any(&l))],
        vec![],
    );
    ads.expect_delta("LDS ACK", |r| {
        r.type_url == LDS() && r.response_nonce == "l1"
    })
    .await;
    let rds = ads
        .expect_delta("RDS subscribe", |r| {
            r.type_url == RDS() && !r.resource_names_subscribe.is_empty()
        })
        .await;
    assert_eq!(rds.resource_names_subscribe, ["9080"]);

    ads.push_delta(
        &EDS(),
        "e1",
        vec![(
            cluster.into(),
            any(&cla(cluster, &[("10.1.0.1:9080".parse().unwrap(), 1, 1)])),
        )],
        vec![],
    );
    ads.push_delta(
        &RDS(),
        "r1",
        vec![(
            "9080".into(),
            any(&route_table(
                "9080",
                &["reviews"],
                vec![route("/", cluster)],
            )),
        )],
        vec![],
    );
    let cfg = wait_for(&mut rx, "all four types", |c| {
        c.endpoints.contains_key(cluster) && c.routes.contains_key("9080")
    })
    .await;
    assert!(cfg.is_ready());
    assert!(matches!(
        cfg.clusters[cluster].discovery,
        Discovery::Eds { .. }
    ));
    assert_eq!(cfg.versions[&EDS()][cluster], "e1");
}

#[tokio::test]
async fn delta_nack_names_the_bad_resource_while_good_ones_apply() {
    let mut ads = FakeAds::start().await;
    let mut rx = start_client(&ads, XdsMode::Delta);
    ads.expect_delta("LDS subscribe", |r| r.type_url == LDS())
        .await;
    let mut bad = eds_cluster("outbound|9080||x", LbPolicy::RoundRobin);
    bad.lb_subset_config = Some(Default::default());
    ads.push_delta(
        &CDS(),
        "c1",
        vec![
            ("good".into(), any(&eds_cluster("good", LbPolicy::Random))),
            ("outbound|9080||x".into(), any(&bad)),
        ],
        vec![],
    );
    let nack = ads
        .expect_delta("CDS NACK", |r| r.response_nonce == "c1")
        .await;
    let detail = nack.error_detail.expect("NACK carries error_detail");
    assert_eq!(
        detail.message,
        "Cluster outbound|9080||x: unsupported field lb_subset_config"
    );
    let cfg = wait_for(&mut rx, "good cluster", |c| c.clusters.contains_key("good")).await;
    assert!(!cfg.clusters.contains_key("outbound|9080||x"));

    // The next good update of the same resource is ACKed and replaces nothing else.
    ads.push_delta(
        &CDS(),
        "c2",
        vec![(
            "outbound|9080||x".into(),
            any(&eds_cluster("outbound|9080||x", LbPolicy::RoundRobin)),
        )],
        vec![],
    );
    let ack = ads
        .expect_delta("CDS ACK", |r| r.response_nonce == "c2")
        .await;
    assert!(ack.error_detail.is_none());
    let cfg = wait_for(&mut rx, "both clusters", |c| c.clusters.len() == 2).await;
    assert!(cfg.clusters.contains_key("good"));
}

#[tokio::test]
async fn delta_reconnect_resumes_with_initial_resource_versions_and_keeps_config() {
    let mut ads = FakeAds::start().await;
    let mut rx = start_client(&ads, XdsMode::Delta);
    ads.expect_delta("CDS subscribe", |r| r.type_url == CDS())
        .await;
    ads.push_delta(
        &CDS(),
        "v7",
        vec![("a".into(), any(&eds_cluster("a", LbPolicy::RoundRobin)))],
        vec![],
    );
    ads.expect_delta("CDS ACK", |r| r.response_nonce == "v7")
        .await;
    ads.expect_delta("EDS subscribe", |r| {
        r.type_url == EDS() && r.resource_names_subscribe == ["a"]
    })
    .await;

    ads.break_streams();
    let resumed = ads
        .expect_delta("CDS resubscribe", |r| {
            r.type_url == CDS() && r.response_nonce.is_empty() && r.node.is_some()
        })
        .await;
    assert_eq!(
        resumed
            .initial_resource_versions
            .get("a")
            .map(String::as_str),
        Some("v7")
    );
    let eds = ads
        .expect_delta("EDS resubscribe", |r| {
            r.type_url == EDS() && r.response_nonce.is_empty()
        })
        .await;
    assert_eq!(eds.resource_names_subscribe, ["a"]);
    assert_eq!(ads.streams(), 2);
    // The proxy kept serving its config across the reconnect.
    assert!(rx.borrow_and_update().clusters.contains_key("a"));
}

#[tokio::test]
async fn sotw_client_acks_with_version_and_nacks_with_previous_version() {
    let mut ads = FakeAds::start().await;
    let mut rx = start_client(&ads, XdsMode::Sotw);
    ads.expect_sotw("CDS request", |r| r.type_url == CDS())
        .await;
    ads.push_sotw(
        &CDS(),
        "1",
        vec![
            any(&eds_cluster("a", LbPolicy::RoundRobin)),
            any(&eds_cluster("b", LbPolicy::RoundRobin)),
        ],
    );
    let ack = ads
        .expect_sotw("CDS ACK", |r| {
            r.type_url == CDS() && r.response_nonce == "n-1"
        })
        .await;
    assert_eq!(ack.version_info, "1");
    assert!(ack.error_detail.is_none());
    let eds = ads
        .expect_sotw("EDS request", |r| r.type_url == EDS())
        .await;
    assert_eq!(eds.resource_names, ["a", "b"]);

    // State of the world: b is gone, c is bad, a stays.
    let mut c = eds_cluster("c", LbPolicy::RoundRobin);
    c.health_checks.push(Default::default());
    ads.push_sotw(
        &CDS(),
        "2",
        vec![any(&eds_cluster("a", LbPolicy::RoundRobin)), any(&c)],
    );
    let nack = ads
        .expect_sotw("CDS NACK", |r| {
            r.type_url == CDS() && r.response_nonce == "n-2"
        })
        .await;
    assert_eq!(nack.version_info, "1");
    assert_eq!(
        nack.error_detail.unwrap().message,
        "Cluster c: unsupported field health_checks"
    );
    let cfg = wait_for(&mut rx, "b removed", |c| !c.clusters.contains_key("b")).await;
    assert!(cfg.clusters.contains_key("a"));
    let eds = ads
        .expect_sotw("EDS narrowed", |r| {
            r.type_url == EDS() && r.resource_names == ["a"]
        })
        .await;
    assert!(eds.error_detail.is_none());
}

/// An ADS server over TLS (the mesh CA's serving certificate, optional
/// client certificates) that reports the client's SPIFFE ID and sends one
/// cluster on a delta stream.
struct TlsAds {
    seen: tokio::sync::mpsc::UnboundedSender<Option<String>>,
}

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService for TlsAds {
    type StreamAggregatedResourcesStream =
        BoxStream<mesh_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryResponse>;
    type DeltaAggregatedResourcesStream =
        BoxStream<mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: tonic::Request<
            tonic::Streaming<mesh_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryRequest>,
        >,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<
            tonic::Streaming<
                mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
            >,
        >,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        use futures_util::StreamExt;
        use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryResponse, Resource,
        };
        let id = request
            .peer_certs()
            .and_then(|c| c.first().and_then(mesh_ca::verifier::spiffe_id_of_cert))
            .map(|id| id.to_string());
        let _ = self.seen.send(id);
        let name = "outbound|80||tls.default.svc.cluster.local";
        let cluster = static_cluster(name, &["127.0.0.1:9".parse().unwrap()]);
        let resp = DeltaDiscoveryResponse {
            system_version_info: "1".into(),
            type_url: CDS(),
            nonce: "1".into(),
            resources: vec![Resource {
                name: name.into(),
                version: "1".into(),
                resource: Some(any(&cluster)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let stream = futures_util::stream::iter([Ok(resp)]).chain(futures_util::stream::pending());
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[tokio::test]
async fn https_xds_address_connects_over_mtls_with_the_svid() {
    use mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    mesh_proxy::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = mesh_ca::CertificateAuthority::load_or_init(
        dir.path(),
        "cluster.local",
        mesh_ca::IssuePolicy::default(),
    )
    .unwrap();
    let tls = mesh_ca::server::tls_config(&ca, &mesh_ca::server::ServeOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AggregatedDiscoveryServiceServer::new(TlsAds {
                seen: seen_tx,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let spiffe_id = "spiffe://cluster.local/ns/default/sa/productpage";
    let issued = ca
        .issue_with_new_key(&spiffe_id.parse().unwrap(), None)
        .unwrap();
    let svid = mesh_proxy::tls::Svid {
        chain: mesh_ca::pem::parse_certs("chain", &issued.cert.chain_pem.concat()).unwrap(),
        key: PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
        roots: ca.trust_bundle().roots().to_vec(),
    };
    let (_svid_tx, svid_rx) = watch::channel(Some(Arc::new(svid)));
    let mut cfg = XdsClientConfig::new(
        format!("https://{addr}"),
        NodeIdentity {
            namespace: "default".into(),
            workload_name: "productpage-v1".into(),
            ..Default::default()
        },
    );
    cfg.svid = Some(svid_rx);
    cfg.initial_backoff = Duration::from_millis(20);
    let (client, mut rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    let id = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("stream in time")
        .unwrap();
    assert_eq!(id.as_deref(), Some(spiffe_id));
    wait_for(&mut rx, "the cluster over mTLS", |c| {
        c.clusters
            .contains_key("outbound|80||tls.default.svc.cluster.local")
    })
    .await;
}
