//! `/debug/config_dump?proxyID=` and `/debug/ca` over real HTTP, against an
//! in-process meshd with a fake Envoy connected over ADS.

mod common;

use std::time::Duration;

use common::call;
use mesh_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use mesh_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

const CONFIG: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1}
spec: {address: 127.0.0.1, labels: {app: reviews, version: v1}, ports: {http: 9081}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s}
    loadBalancer: {simple: ROUND_ROBIN}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 5xx}
    fault: {abort: {percentage: {value: 1}, httpStatus: 503}}
";

const NODE_ID: &str = "sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local";

async fn start() -> (tempfile::TempDir, mesh_control::server::Running) {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_meshd(dir.path()).await;
    let (status, body) = call(running.http_addr, "POST", "/apis/v1/apply", CONFIG).await;
    assert_eq!(status, 200, "{body}");
    (dir, running)
}

fn node() -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    Node {
        id: NODE_ID.into(),
        cluster: "productpage.default".into(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), s("default")),
                ("SERVICE_ACCOUNT".to_string(), s("bookinfo-productpage")),
                ("INSTANCE_IPS".to_string(), s("127.0.0.1")),
                ("MESH_SERVICE_PORTS".to_string(), s("http:9080")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(Struct {
                            fields: [("app".to_string(), s("productpage"))]
                                .into_iter()
                                .collect(),
                        })),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    }
}

const REVIEWS_V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";

/// Connects, subscribes to CDS and ACKs the first response that carries the
/// reviews v1 cluster; keeps the stream open while the returned values live.
async fn connect_and_ack(
    addr: std::net::SocketAddr,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
) {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(DiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("a CDS response with the reviews cluster in time")
            .unwrap()
            .unwrap();
        tx.send(DiscoveryRequest {
            type_url: CDS.into(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let has_reviews = r
            .resources
            .iter()
            .any(|a| Cluster::decode(a.value.as_slice()).is_ok_and(|c| c.name == REVIEWS_V1));
        if has_reviews {
            return (tx, stream);
        }
    }
}

#[tokio::test]
async fn config_dump_of_a_connected_proxy_is_envoy_admin_json() {
    let (_dir, meshd) = start().await;
    let _stream = connect_and_ack(meshd.xds_addr).await;
    let (status, dump) = call(
        meshd.http_addr,
        "GET",
        "/debug/config_dump?proxyID=productpage-1.default",
        "",
    )
    .await;
    assert_eq!(status, 200, "{dump}");
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    // Bootstrap: the node as meshd read it.
    let node = &dump["configs"][0]["bootstrap"]["node"];
    assert_eq!(node["id"], NODE_ID);
    assert_eq!(node["cluster"], "productpage.default");
    assert_eq!(node["metadata"]["SERVICE_ACCOUNT"], "bookinfo-productpage");

    // Clusters: Envoy's field names, packed with @type, per-resource versions.
    let cds = &dump["configs"][1];
    assert!(cds["version_info"].as_str().is_some_and(|v| !v.is_empty()));
    let clusters = cds["dynamic_active_clusters"].as_array().unwrap();
    let reviews = clusters
        .iter()
        .find(|c| c["cluster"]["name"] == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap_or_else(|| panic!("no reviews cluster in {cds}"));
    assert_eq!(
        reviews["cluster"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert!(reviews["version_info"].as_str().is_some());
    // Sent, so last_updated is an RFC 3339 timestamp.
    assert!(
        reviews["last_updated"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{reviews}"
    );
    // Durations in their JSON form.
    assert!(
        reviews["cluster"]["connect_timeout"]
            .as_str()
            .is_some_and(|t| t.ends_with('s')),
        "{reviews}"
    );

    // Listeners: dynamic_listeners[].active_state.listener.
    let lds = &dump["configs"][3];
    let names: Vec<&str> = lds["dynamic_listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"virtualOutbound"), "{names:?}");
    let l0 = &lds["dynamic_listeners"][0]["active_state"]["listener"];
    assert_eq!(
        l0["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    // Filters inside listeners are packed too, with their own @type.
    let text = dump.to_string();
    assert!(
        text.contains("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "{text}"
    );
    // mTLS (STRICT): TLS transport sockets and SDS configs print too.
    assert!(
        text.contains(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
        ) || text.contains(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        ),
        "{text}"
    );
    // Endpoints: the reviews assignment.
    let eds = &dump["configs"][2]["dynamic_endpoint_configs"];
    assert!(
        eds.as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint_config"]["cluster_name"]
                == "outbound|9080||reviews.default.svc.cluster.local"),
        "{eds}"
    );

    // The node id works as well as the istioctl name.
    let (status, _) = call(
        meshd.http_addr,
        "GET",
        &format!("/debug/config_dump?proxyID={NODE_ID}"),
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn config_dump_of_an_unknown_proxy_is_404_listing_connected_ones() {
    let (_dir, meshd) = start().await;
    let _stream = connect_and_ack(meshd.xds_addr).await;
    let (status, body) = call(
        meshd.http_addr,
        "GET",
        "/debug/config_dump?proxyID=nope.default",
        "",
    )
    .await;
    assert_eq!(status, 404);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("nope.default"), "{msg}");
    assert!(msg.contains("productpage-1.default"), "{msg}");
    let (status, body) = call(meshd.http_addr, "GET", "/debug/config_dump", "").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("proxyID"));
}

#[tokio::test]
async fn debug_ca_reports_the_root_validity_and_meshd_clock() {
    let (_dir, meshd) = start().await;
    let (status, body) = call(meshd.http_addr, "GET", "/debug/ca", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trust_domain"], "cluster.local");
    let root = &body["roots"][0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(root["not_before"].as_i64().unwrap() <= now.as_secs() as i64);
    assert!(root["not_after"].as_i64().unwrap() > now.as_secs() as i64 + 365 * 86400);
    assert!(!root["subject"].as_str().unwrap().is_empty());
    let meshd_ms = body["now_ms"].as_u64().unwrap();
    assert!((meshd_ms as i128 - now.as_millis() as i128).abs() < 5_000);
}

/// A large mesh (1,000 services) dumps whole: every service's cluster is
/// in the proxy's dump.
#[tokio::test]
async fn a_dump_of_a_thousand_services_lists_every_cluster() {
    let (_dir, meshd) = start().await;
    let mut yaml = String::new();
    for i in 0..1000 {
        let eps: Vec<String> = (0..5)
            .map(|e| format!("{{address: 10.{}.{}.{e}}}", i / 250, i % 250))
            .collect();
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}}}\nspec: {{hosts: [svc-{i}.default.svc.cluster.local], ports: [{{number: 80, name: http}}], resolution: STATIC, endpoints: [{}]}}\n",
            eps.join(", ")
        ));
    }
    let (status, body) = call(meshd.http_addr, "POST", "/apis/v1/apply", &yaml).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(meshd.http_addr, "GET", "/debug/registryz", "").await.1;
        if r["services"].as_object().map_or(0, |m| m.len()) > 1000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "services never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _stream = connect_and_ack(meshd.xds_addr).await;
    let (status, dump) = call(
        meshd.http_addr,
        "GET",
        "/debug/config_dump?proxyID=productpage-1.default",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let clusters = dump["configs"][1]["dynamic_active_clusters"]
        .as_array()
        .expect("a clusters section");
    for i in [0, 499, 999] {
        let name = format!("outbound|80||svc-{i}.default.svc.cluster.local");
        assert!(
            clusters
                .iter()
                .any(|c| c["cluster"]["name"].as_str() == Some(name.as_str())),
            "{name} missing from {} clusters",
            clusters.len()
        );
    }
    assert!(clusters.len() > 1000, "{} clusters", clusters.len());
}
