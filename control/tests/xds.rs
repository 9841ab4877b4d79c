//! The ADS server over real gRPC, driven by a fake Envoy client.

mod common;

use std::time::Duration;

use common::{call, open_delta};
use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use mesh_proto::envoy::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

const CONFIG: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1}
spec: {address: 127.0.0.1, labels: {app: backend}, ports: {http: 9001}}
";

async fn start() -> (tempfile::TempDir, mesh_control::server::Running) {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_meshd(dir.path()).await;
    let (status, body) = call(running.http_addr, "POST", "/apis/v1/apply", CONFIG).await;
    assert_eq!(status, 200, "{body}");
    wait_services(running.http_addr, 1).await;
    (dir, running)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        cluster: "test".into(),
        ..Default::default()
    })
}

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap();
        Self {
            tx,
            rx: resp.into_inner(),
        }
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("response in time")
            .unwrap()
            .unwrap()
    }
}

async fn wait_services(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..200 {
        let r = call(addr, "GET", "/debug/registryz", "").await.1;
        if r["services"].as_object().map(|m| m.len()).unwrap_or(0) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = call(addr, "GET", "/debug/registryz", "").await.1;
    panic!(
        "services never appeared: {:?} {}",
        r["services"].as_object().map(|m| m.len()),
        r["snapshot_version"]
    );
}

async fn syncz(addr: std::net::SocketAddr) -> serde_json::Value {
    call(addr, "GET", "/debug/syncz", "").await.1
}

async fn wait_for<F: Fn(&serde_json::Value) -> bool>(
    addr: std::net::SocketAddr,
    f: F,
) -> serde_json::Value {
    for _ in 0..200 {
        let s = syncz(addr).await;
        if f(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "syncz never reached the expected state: {}",
        syncz(addr).await
    );
}

#[tokio::test]
async fn ack_marks_synced_and_nack_keeps_the_error_message() {
    let (_dir, meshd) = start().await;
    let mut c = Client::connect(meshd.xds_addr).await;
    c.send(DiscoveryRequest {
        node: node("sidecar~127.0.0.1~a.default~default.svc.cluster.local"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert!(r.resources.len() >= 3, "backend + passthrough + blackhole");
    c.send(DiscoveryRequest {
        type_url: CDS.into(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await;
    let s = wait_for(meshd.http_addr, |s| {
        s["proxies"][0]["states"]["CDS"] == "SYNCED"
    })
    .await;
    assert_eq!(s["proxies"][0]["name"], "a.default");

    // EDS for the named cluster.
    let cluster = "outbound|80||backend.default.svc.cluster.local";
    c.send(DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![cluster.into()],
        ..Default::default()
    })
    .await;
    let e = c.recv().await;
    assert_eq!(e.resources.len(), 1);
    c.send(DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![cluster.into()],
        response_nonce: e.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad endpoint".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let s = wait_for(meshd.http_addr, |s| {
        s["proxies"][0]["states"]["EDS"] == "ERROR"
    })
    .await;
    assert_eq!(
        s["proxies"][0]["types"]["EDS"]["nack_message"],
        "bad endpoint"
    );
    let m = call(meshd.http_addr, "GET", "/metrics", "").await.1;
    assert!(
        m.as_str()
            .unwrap()
            .contains("pilot_total_xds_rejects_total{type=\"eds\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn config_change_is_pushed_and_unknown_types_are_ignored() {
    let (_dir, meshd) = start().await;
    let mut c = Client::connect(meshd.xds_addr).await;
    c.send(DiscoveryRequest {
        node: node("n1"),
        type_url: "type.googleapis.com/envoy.unknown.v3.Thing".into(),
        ..Default::default()
    })
    .await;
    c.send(DiscoveryRequest {
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let first = c.recv().await;
    assert_eq!(first.type_url, CDS);
    let more = CONFIG.replace("backend", "other");
    call(meshd.http_addr, "POST", "/apis/v1/apply", &more).await;
    let pushed = c.recv().await;
    assert!(pushed.resources.len() > first.resources.len());
    assert_ne!(pushed.version_info, first.version_info);
}

#[tokio::test]
async fn bad_clients_do_not_disturb_others() {
    let (_dir, meshd) = start().await;
    // No node on the first request: that stream is refused.
    let mut bad = Client::connect(meshd.xds_addr).await;
    bad.send(DiscoveryRequest {
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let err = tokio::time::timeout(Duration::from_secs(5), bad.rx.message())
        .await
        .unwrap();
    assert!(err.is_err(), "stream without node must fail");
    // A client that never reads nor ACKs, and one that vanishes mid-push.
    let silent = Client::connect(meshd.xds_addr).await;
    silent
        .send(DiscoveryRequest {
            node: node("silent"),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    let vanishing = Client::connect(meshd.xds_addr).await;
    vanishing
        .send(DiscoveryRequest {
            node: node("vanishing"),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    drop(vanishing);
    let mut good = Client::connect(meshd.xds_addr).await;
    good.send(DiscoveryRequest {
        node: node("good"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let mut last = good.recv().await;
    for i in 0..30 {
        let more = CONFIG.replace("backend", &format!("svc{i}"));
        let (st, b) = call(meshd.http_addr, "POST", "/apis/v1/apply", &more).await;
        assert_eq!(st, 200, "{b}");
        // One snapshot (and push) per service, not one for all thirty.
        wait_services(meshd.http_addr, i + 2).await;
    }
    // The good client keeps receiving pushes until it has all 31 services.
    loop {
        eprintln!("good client has {} clusters", last.resources.len());
        if last.resources.len() >= 31 + 2 {
            break;
        }
        good.send(DiscoveryRequest {
            type_url: CDS.into(),
            version_info: last.version_info.clone(),
            response_nonce: last.nonce.clone(),
            ..Default::default()
        })
        .await;
        last = good.recv().await;
    }
    drop(silent);
}

#[tokio::test]
async fn delta_reconnect_with_known_versions_resends_nothing() {
    let (_dir, meshd) = start().await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", meshd.xds_addr))
            .await
            .unwrap();
    let (tx, mut stream) = open_delta(
        &mut client,
        DeltaDiscoveryRequest {
            node: node("delta"),
            type_url: CDS.into(),
            ..Default::default()
        },
    )
    .await;
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.resources.len() >= 3);
    let known = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(tx);
    drop(stream);
    let (_tx, mut stream) = open_delta(
        &mut client,
        DeltaDiscoveryRequest {
            node: node("delta"),
            type_url: CDS.into(),
            initial_resource_versions: known,
            ..Default::default()
        },
    )
    .await;
    let resumed = stream.message().await.unwrap().unwrap();
    assert!(
        resumed.resources.is_empty(),
        "nothing changed, nothing resent"
    );
    assert!(resumed.removed_resources.is_empty());
}

/// Regression: a later subscription (no nonce) was taken for a fresh stream
/// and resent every resource the client already had.
#[tokio::test]
async fn delta_subscribing_more_names_sends_only_the_new_ones() {
    let (_dir, meshd) = start().await;
    call(
        meshd.http_addr,
        "POST",
        "/apis/v1/apply",
        &CONFIG.replace("backend", "other"),
    )
    .await;
    wait_services(meshd.http_addr, 2).await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", meshd.xds_addr))
            .await
            .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let a = "outbound|80||backend.default.svc.cluster.local";
    let b = "outbound|80||other.default.svc.cluster.local";
    tx.send(DeltaDiscoveryRequest {
        node: node("delta-sub"),
        type_url: EDS.into(),
        resource_names_subscribe: vec![a.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.resources.len(), 1);
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![b.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let second = stream.message().await.unwrap().unwrap();
    let names: Vec<&str> = second.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec![b]);
}

#[tokio::test]
async fn delta_names_removed_clusters_after_a_delete() {
    let (_dir, meshd) = start().await;
    call(
        meshd.http_addr,
        "POST",
        "/apis/v1/apply",
        &CONFIG.replace("backend", "other"),
    )
    .await;
    wait_services(meshd.http_addr, 2).await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", meshd.xds_addr))
            .await
            .unwrap();
    let (tx, mut stream) = open_delta(
        &mut client,
        DeltaDiscoveryRequest {
            node: node("delta-rm"),
            type_url: CDS.into(),
            ..Default::default()
        },
    )
    .await;
    let first = stream.message().await.unwrap().unwrap();
    let other = "outbound|80||other.default.svc.cluster.local";
    assert!(first.resources.iter().any(|r| r.name == other));
    tx.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, _) = call(meshd.http_addr, "DELETE", "/apis/v1/se/default/other", "").await;
    assert_eq!(status, 200);
    let update = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.removed_resources, vec![other.to_string()]);
    assert!(update.resources.is_empty());
}

#[tokio::test]
async fn delta_endpoint_change_sends_only_the_changed_load_assignment() {
    let (_dir, meshd) = start().await;
    call(
        meshd.http_addr,
        "POST",
        "/apis/v1/apply",
        &CONFIG.replace("backend", "other"),
    )
    .await;
    wait_services(meshd.http_addr, 2).await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", meshd.xds_addr))
            .await
            .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let a = "outbound|80||backend.default.svc.cluster.local";
    let b = "outbound|80||other.default.svc.cluster.local";
    tx.send(DeltaDiscoveryRequest {
        node: node("delta-eds"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![a.into(), b.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("response in time")
            .unwrap()
            .unwrap();
        tx.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        r
    };
    let (mut cds, mut eds) = (false, 0);
    while !(cds && eds == 2) {
        let r = next().await;
        cds |= r.type_url == CDS;
        if r.type_url == EDS {
            eds += r.resources.len();
        }
    }
    // backend-1 moves to another port: only backend's endpoints change.
    let moved = CONFIG.replace("9001", "9002");
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &moved).await;
    assert_eq!(status, 200, "{body}");
    let update = next().await;
    assert_eq!(update.type_url, EDS, "clusters are unchanged: no CDS push");
    let names: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec![a]);
    assert!(update.removed_resources.is_empty());
}

#[tokio::test]
async fn sotw_endpoint_change_pushes_only_endpoints() {
    let (_dir, meshd) = start().await;
    let mut client = Client::connect(meshd.xds_addr).await;
    let a = "outbound|80||backend.default.svc.cluster.local";
    client
        .send(DiscoveryRequest {
            node: node("sotw-eds"),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    let cds = client.recv().await;
    client
        .send(DiscoveryRequest {
            type_url: CDS.into(),
            version_info: cds.version_info.clone(),
            response_nonce: cds.nonce.clone(),
            ..Default::default()
        })
        .await;
    client
        .send(DiscoveryRequest {
            type_url: EDS.into(),
            resource_names: vec![a.into()],
            ..Default::default()
        })
        .await;
    let eds = client.recv().await;
    assert_eq!(eds.type_url, EDS);
    client
        .send(DiscoveryRequest {
            type_url: EDS.into(),
            version_info: eds.version_info.clone(),
            resource_names: vec![a.into()],
            response_nonce: eds.nonce.clone(),
            ..Default::default()
        })
        .await;
    let moved = CONFIG.replace("9001", "9002");
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &moved).await;
    assert_eq!(status, 200, "{body}");
    let update = client.recv().await;
    assert_eq!(update.type_url, EDS, "clusters are unchanged: no CDS push");
    assert_ne!(update.version_info, eds.version_info);
    assert_eq!(update.resources.len(), 1);
}

/// A node whose metadata names `namespace` and `service_account`.
fn node_of(id: &str, namespace: &str, service_account: &str) -> Option<Node> {
    use mesh_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    Some(Node {
        id: id.into(),
        cluster: "test".into(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), s(namespace)),
                ("SERVICE_ACCOUNT".to_string(), s(service_account)),
            ]
            .into(),
        }),
        ..Default::default()
    })
}

/// A channel to meshd's TLS port presenting an SVID for `spiffe_id`,
/// issued by meshd's CA.
async fn mtls_channel(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    spiffe_id: &str,
) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ca = mesh_ca::CertificateAuthority::load_or_init(
        &dir.join("ca"),
        "cluster.local",
        mesh_ca::IssuePolicy::default(),
    )
    .unwrap();
    let svid = ca
        .issue_with_new_key(&spiffe_id.parse().unwrap(), None)
        .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.trust_bundle().pem()))
        .identity(Identity::from_pem(
            svid.cert.chain_pem.concat(),
            svid.key_pem,
        ))
        .domain_name("mesh-ca");
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn xds_over_mtls_serves_the_svids_own_identity_and_refuses_another() {
    let (dir, meshd) = start().await;
    let channel = mtls_channel(
        dir.path(),
        meshd.ca_addr,
        "spiffe://cluster.local/ns/shop/sa/reviews",
    )
    .await;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    // Delta, matching identity: config flows.
    let (_tx, mut stream) = open_delta(
        &mut client,
        DeltaDiscoveryRequest {
            node: node_of("reviews-1", "shop", "reviews"),
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
    assert!(
        first
            .resources
            .iter()
            .any(|r| r.name == "outbound|80||backend.default.svc.cluster.local")
    );
    // Delta and SotW, claiming another service account: refused.
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: node_of("ratings-1", "shop", "ratings"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut refused = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(Duration::from_secs(10), refused.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message()
            .contains("spiffe://cluster.local/ns/shop/sa/reviews"),
        "{err}"
    );
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node_of("ratings-1", "other", "reviews"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut refused = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(Duration::from_secs(10), refused.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    // The plaintext port keeps serving without a certificate.
    let mut plain = Client::connect(meshd.xds_addr).await;
    plain
        .send(DiscoveryRequest {
            node: node_of("ratings-1", "shop", "ratings"),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    assert!(!plain.recv().await.resources.is_empty());
}

/// A gRPC codec that sends and receives raw bytes, to send what no
/// protobuf decoder accepts.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct Raw;

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

#[tokio::test]
async fn malformed_requests_end_only_their_own_stream() {
    let (_dir, meshd) = start().await;
    let mut good = Client::connect(meshd.xds_addr).await;
    good.send(DiscoveryRequest {
        node: node("good"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let first = good.recv().await;
    good.send(DiscoveryRequest {
        type_url: CDS.into(),
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", meshd.xds_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Field 1 as a length-delimited string longer than the message.
    let garbage = vec![0x0a, 0xff, 0xff, 0x03, 0x01];
    for method in ["DeltaAggregatedResources", "StreamAggregatedResources"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = format!("/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}");
        let requests = tokio_stream::iter(vec![garbage.clone()]);
        let answer = grpc
            .streaming(
                tonic::Request::new(requests),
                path.parse().unwrap(),
                RawCodec,
            )
            .await;
        let err = match answer {
            Err(e) => e,
            Ok(resp) => {
                let mut stream = resp.into_inner();
                tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("an answer in time")
                    .expect_err("a malformed request is refused")
            }
        };
        assert_ne!(err.code(), tonic::Code::Ok, "{method}: {err}");
        assert!(err.message().contains("decod"), "{method}: {err}");
    }
    // The good client still gets pushes.
    let more = CONFIG.replace("backend", "after");
    let (st, b) = call(meshd.http_addr, "POST", "/apis/v1/apply", &more).await;
    assert_eq!(st, 200, "{b}");
    let update = good.recv().await;
    assert_eq!(update.resources.len(), first.resources.len() + 1);
}

/// A client certificate that chains to the mesh's CA but carries no SPIFFE
/// ID (a DNS name only, client-auth usage), signed here with the CA's own
/// key as a misconfigured issuer would.
fn non_svid_identity(dir: &std::path::Path) -> tonic::transport::Identity {
    let ca_dir = dir.join("ca");
    let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&read(mesh_ca::authority::CA_KEY)).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&read(mesh_ca::authority::CA_CERT), ca_key).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["not-a-workload.example".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = format!("{}{}", cert.pem(), read(mesh_ca::authority::CERT_CHAIN));
    tonic::transport::Identity::from_pem(chain, key.serialize_pem())
}

#[tokio::test]
async fn xds_over_mtls_refuses_a_mesh_certificate_without_spiffe_id() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let (dir, meshd) = start().await;
    let root =
        std::fs::read_to_string(dir.path().join("ca").join(mesh_ca::authority::TRUST_BUNDLE))
            .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .identity(non_svid_identity(dir.path()))
        .domain_name("mesh-ca");
    let channel = Endpoint::from_shared(format!("https://{}", meshd.ca_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("the certificate chains to the mesh root, so the handshake succeeds");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: node_of("reviews-1", "shop", "reviews"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Refused when the stream opens (or, at the latest, instead of the
    // first response).
    let err = match client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Err(e) => e,
        Ok(stream) => tokio::time::timeout(Duration::from_secs(10), stream.into_inner().message())
            .await
            .unwrap()
            .unwrap_err(),
    };
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("no SPIFFE ID"), "{err}");
}
