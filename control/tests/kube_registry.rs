//! The Kubernetes service registry against a scripted API server: Services,
//! EndpointSlices, Pods and Nodes as the API server lists them become
//! registry services in meshd's snapshot (ClusterIP as the VIP, protocols
//! from appProtocol and port names, endpoint health from the slice
//! conditions, pod labels and service account, node locality).

mod kube_support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube_support::{Reply, list, pair, serve};
use mesh_control::kube::KubeStore;
use mesh_control::registry::{Health, Protocol, TLS_MODE_LABEL, Workloads};
use mesh_control::snapshot::SnapshotBuilder;
use mesh_control::vip::VipAllocator;
use serde_json::{Value, json};

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-svc", "resourceVersion": "10",
                     "creationTimestamp": "2026-11-24T09:00:00Z", "labels": {"app": "reviews"}},
        "spec": {
            "clusterIP": "10.96.14.7", "clusterIPs": ["10.96.14.7"], "type": "ClusterIP",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "selector": {"app": "reviews"},
            "ports": [
                {"name": "web", "port": 9080, "protocol": "TCP", "targetPort": "http", "appProtocol": "http"},
                {"name": "grpc-api", "port": 9090, "protocol": "TCP", "targetPort": 9090}
            ]
        },
        "status": {"loadBalancer": {}}
    })
}

fn external_name() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "legacy", "namespace": "shop", "uid": "u-ext", "resourceVersion": "11"},
        "spec": {"type": "ExternalName", "externalName": "legacy.example.com"}
    })
}

fn endpoint(
    ip: &str,
    pod: &str,
    node: &str,
    ready: bool,
    serving: bool,
    terminating: bool,
) -> Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": node,
        "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod, "uid": format!("u-{pod}")},
        "zone": "eu-west-1a"
    })
}

fn slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "reviews-x7k2p", "namespace": "shop", "uid": "u-slice", "resourceVersion": "20",
                     "generateName": "reviews-", "creationTimestamp": "2026-11-24T09:00:00Z",
                     "labels": {"kubernetes.io/service-name": "reviews",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "reviews", "uid": "u-svc",
                                          "controller": true, "blockOwnerDeletion": true}]},
        "addressType": "IPv4",
        "endpoints": [
            endpoint("10.244.1.5", "reviews-v1-abc", "node-a", true, true, false),
            endpoint("10.244.2.6", "reviews-v2-def", "node-b", false, true, true),
            endpoint("10.244.2.7", "reviews-v2-ghi", "node-b", false, false, false)
        ],
        "ports": [
            {"name": "web", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
            {"name": "grpc-api", "port": 9090, "protocol": "TCP"}
        ]
    })
}

fn pod(name: &str, version: &str, injected: bool) -> Value {
    let mut annotations = json!({});
    if injected {
        annotations = json!({"sidecar.mesh.dev/status": "{\"containers\":[\"mesh-proxy\"]}"});
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"), "resourceVersion": "30",
                     "labels": {"app": "reviews", "version": version}, "annotations": annotations},
        "spec": {"serviceAccountName": "bookinfo-reviews", "nodeName": "node-a",
                 "containers": [{"name": "reviews", "image": "reviews:1"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5"}
    })
}

fn node(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("u-{name}"), "resourceVersion": "40",
                     "labels": {"kubernetes.io/hostname": name,
                                "topology.kubernetes.io/region": "eu-west-1",
                                "topology.kubernetes.io/zone": zone}},
        "spec": {"podCIDR": "10.244.1.0/24"}
    })
}

#[tokio::test]
async fn services_and_slices_become_snapshot_services_with_cluster_ips() {
    let (client, handle) = pair();
    let (_seen, _server) = serve(handle, |req| {
        assert_eq!(req.method, Method::GET);
        if req.is_watch() {
            return Reply::Hang;
        }
        match req.path.as_str() {
            "/api/v1/services" => Reply::Json(
                200,
                list("v1", "Service", "100", vec![service(), external_name()]),
            ),
            "/apis/discovery.k8s.io/v1/endpointslices" => Reply::Json(
                200,
                list("discovery.k8s.io/v1", "EndpointSlice", "100", vec![slice()]),
            ),
            "/api/v1/pods" => Reply::Json(
                200,
                list(
                    "v1",
                    "Pod",
                    "100",
                    vec![
                        pod("reviews-v1-abc", "v1", true),
                        pod("reviews-v2-def", "v2", false),
                    ],
                ),
            ),
            "/api/v1/nodes" => Reply::Json(
                200,
                list(
                    "v1",
                    "Node",
                    "100",
                    vec![node("node-a", "eu-west-1a"), node("node-b", "eu-west-1b")],
                ),
            ),
            other => panic!("unexpected list {other}"),
        }
    });
    let workloads = Arc::new(Workloads::new(Duration::from_secs(60)));
    let (registry, tasks) =
        mesh_control::kube::registry::spawn(&client, "cluster.local".into(), workloads.clone());
    let mut ready = registry.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();
    assert!(!workloads.platform_services().is_empty());

    let builder = SnapshotBuilder::new(
        Arc::new(KubeStore::new()),
        workloads.clone(),
        VipAllocator::default(),
    );
    let snap = builder.rebuild().await.unwrap();
    assert_eq!(
        snap.services.len(),
        1,
        "ExternalName services are not routed"
    );
    let s = &snap.services["reviews.shop.svc.cluster.local"];
    assert_eq!(s.vip.to_string(), "10.96.14.7", "the ClusterIP is the VIP");
    assert_eq!(s.source, "Service shop/reviews");
    assert_eq!(
        s.ports
            .iter()
            .map(|p| (p.number, p.name.as_str(), p.protocol))
            .collect::<Vec<_>>(),
        [
            (9080, "web", Protocol::Http),
            (9090, "grpc-api", Protocol::Http2)
        ]
    );
    assert_eq!(s.endpoints.len(), 3);
    let by_ip = |ip: &str| s.endpoints.iter().find(|e| e.address == ip).unwrap();

    let ready = by_ip("10.244.1.5");
    assert_eq!(ready.health, Health::Healthy);
    assert_eq!(
        ready.port_for(&s.ports[0]),
        8080,
        "named targetPort from the slice"
    );
    assert_eq!(ready.port_for(&s.ports[1]), 9090);
    assert_eq!(ready.labels["version"], "v1");
    assert_eq!(
        ready.labels.get(TLS_MODE_LABEL).map(String::as_str),
        Some("istio")
    );
    assert_eq!(ready.service_account.as_deref(), Some("bookinfo-reviews"));
    assert_eq!(ready.locality.as_deref(), Some("eu-west-1/eu-west-1a"));

    let draining = by_ip("10.244.2.6");
    assert_eq!(draining.health, Health::Draining, "terminating but serving");
    assert!(
        !draining.labels.contains_key(TLS_MODE_LABEL),
        "no sidecar: plaintext"
    );
    assert_eq!(draining.locality.as_deref(), Some("eu-west-1/eu-west-1b"));

    let down = by_ip("10.244.2.7");
    assert_eq!(down.health, Health::Unhealthy);
    assert!(down.labels.is_empty(), "its pod is unknown");
    for t in tasks {
        t.abort();
    }
}

/// Serves these lists (and hanging watches), runs the registry until it
/// is ready, and builds a snapshot.
async fn snapshot_of(
    services: Vec<Value>,
    slices: Vec<Value>,
    pods: Vec<Value>,
) -> Arc<mesh_control::snapshot::Snapshot> {
    let (client, handle) = pair();
    let (_seen, _server) = serve(handle, move |req| {
        if req.is_watch() {
            return Reply::Hang;
        }
        match req.path.as_str() {
            "/api/v1/services" => Reply::Json(200, list("v1", "Service", "100", services.clone())),
            "/apis/discovery.k8s.io/v1/endpointslices" => Reply::Json(
                200,
                list(
                    "discovery.k8s.io/v1",
                    "EndpointSlice",
                    "100",
                    slices.clone(),
                ),
            ),
            "/api/v1/pods" => Reply::Json(200, list("v1", "Pod", "100", pods.clone())),
            "/api/v1/nodes" => Reply::Json(200, list("v1", "Node", "100", vec![])),
            other => panic!("unexpected list {other}"),
        }
    });
    let workloads = Arc::new(Workloads::new(Duration::from_secs(60)));
    let (registry, tasks) =
        mesh_control::kube::registry::spawn(&client, "cluster.local".into(), workloads.clone());
    let mut ready = registry.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();
    for t in tasks {
        t.abort();
    }
    let builder = SnapshotBuilder::new(
        Arc::new(KubeStore::new()),
        workloads,
        VipAllocator::default(),
    );
    builder.rebuild().await.unwrap()
}

/// A headless Service (`clusterIP: None`) as a StatefulSet's governing
/// Service is listed.
fn headless(name: &str, port: i32, port_name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"), "resourceVersion": "12"},
        "spec": {
            "clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "selector": {"app": "db"}, "publishNotReadyAddresses": false,
            "ports": [{"name": port_name, "port": port, "protocol": "TCP", "targetPort": port}]
        },
        "status": {"loadBalancer": {}}
    })
}

fn headless_slice(service: &str, port: i32, port_name: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-q9z4m"), "namespace": "shop", "uid": format!("u-{service}-slice"),
                     "resourceVersion": "21", "generateName": format!("{service}-"),
                     "labels": {"kubernetes.io/service-name": service,
                                "service.kubernetes.io/headless": "",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })
}

fn db_endpoint(ip: &str, hostname: Option<&str>, pod: &str) -> Value {
    let mut e = json!({
        "addresses": [ip],
        "conditions": {"ready": true, "serving": true, "terminating": false},
        "nodeName": "node-a",
        "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod, "uid": format!("u-{pod}")}
    });
    if let Some(h) = hostname {
        e["hostname"] = json!(h);
    }
    e
}

fn db_pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"), "resourceVersion": "31",
                     "labels": {"app": "db"},
                     "annotations": {"sidecar.mesh.dev/status": "{\"containers\":[\"mesh-proxy\"]}"}},
        "spec": {"serviceAccountName": "db", "hostname": name, "subdomain": "db",
                 "containers": [{"name": "db", "image": "postgres:17"}]},
        "status": {"phase": "Running", "podIP": ip}
    })
}

#[tokio::test]
async fn headless_service_endpoints_get_per_address_chains_and_clusters() {
    use mesh_proto::envoy::pb::envoy::config::listener::v3::Listener;
    use prost::Message;

    let snap = snapshot_of(
        vec![
            headless("db", 5432, "tcp-postgres"),
            // A second headless Service over the same pods: their addresses
            // are taken by `db`'s endpoints (sorted first), so no duplicate chain.
            headless("db-metrics", 5432, "tcp-postgres"),
        ],
        vec![
            headless_slice(
                "db",
                5432,
                "tcp-postgres",
                vec![
                    db_endpoint("10.244.3.10", Some("db-0"), "db-0"),
                    db_endpoint("10.244.3.11", None, "db-1"),
                ],
            ),
            headless_slice(
                "db-metrics",
                5432,
                "tcp-postgres",
                vec![db_endpoint("10.244.3.10", None, "db-0")],
            ),
        ],
        vec![db_pod("db-0", "10.244.3.10"), db_pod("db-1", "10.244.3.11")],
    )
    .await;
    let hosts: Vec<&str> = snap.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "10-244-3-11.db.shop.svc.cluster.local",
            "db-0.db.shop.svc.cluster.local",
            "db-metrics.shop.svc.cluster.local",
            "db.shop.svc.cluster.local",
        ]
    );
    let db0 = &snap.services["db-0.db.shop.svc.cluster.local"];
    assert_eq!(
        db0.vip.to_string(),
        "10.244.3.10",
        "the pod's address is the VIP"
    );
    assert_eq!(db0.endpoints.len(), 1);
    assert_eq!(db0.endpoints[0].address, "10.244.3.10");
    assert_eq!(db0.endpoints[0].service_account.as_deref(), Some("db"));
    assert_eq!(
        db0.endpoints[0]
            .labels
            .get(TLS_MODE_LABEL)
            .map(String::as_str),
        Some("istio"),
        "injected: mTLS to the pod"
    );
    assert_eq!(
        db0.source,
        "Service shop/db (headless, endpoint 10.244.3.10)"
    );
    // The headless Service itself keeps every endpoint (VirtualService and
    // DestinationRule hosts), with an allocated VIP no DNS returns.
    let db = &snap.services["db.shop.svc.cluster.local"];
    assert_eq!(db.endpoints.len(), 2);
    assert!(db.vip.to_string().starts_with("240.240."), "{}", db.vip);

    // What a sidecar gets: one outbound chain per endpoint address and
    // port, to a cluster holding only that endpoint.
    let proxy = mesh_control::node::ProxyNode::from_node(&Default::default());
    let config = mesh_control::translate::generate(&snap, &proxy);
    let any = &config[mesh_control::translate::LISTENER_TYPE]["virtualOutbound"].any;
    let outbound = Listener::decode(any.value.as_slice()).unwrap();
    let chains: Vec<(String, Vec<String>, Option<u32>)> = outbound
        .filter_chains
        .iter()
        .filter_map(|c| {
            let m = c.filter_chain_match.as_ref()?;
            let prefixes: Vec<String> = m
                .prefix_ranges
                .iter()
                .map(|r| format!("{}/{}", r.address_prefix, r.prefix_len.unwrap().value))
                .collect();
            prefixes
                .iter()
                .any(|p| p.starts_with("10.244.3."))
                .then(|| {
                    (
                        c.name.clone(),
                        prefixes,
                        m.destination_port.map(|p| p.value),
                    )
                })
        })
        .collect();
    assert_eq!(
        chains,
        [
            (
                "outbound|5432||10-244-3-11.db.shop.svc.cluster.local".to_string(),
                vec!["10.244.3.11/32".to_string()],
                Some(5432)
            ),
            (
                "outbound|5432||db-0.db.shop.svc.cluster.local".to_string(),
                vec!["10.244.3.10/32".to_string()],
                Some(5432)
            ),
        ]
    );
    let clusters = &config[mesh_control::translate::CLUSTER_TYPE];
    assert!(clusters.contains_key("outbound|5432||db-0.db.shop.svc.cluster.local"));
}
