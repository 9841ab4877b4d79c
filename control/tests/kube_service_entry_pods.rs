//! A ServiceEntry's `workloadSelector` over Pods in Kubernetes mode, against
//! a scripted API server with real-format Pod JSON: the matching pods (and
//! WorkloadEntries) of the entry's namespace become its endpoints in
//! meshd's snapshot, and a pod that stops being ready turns UNHEALTHY.

mod kube_support;

use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use kube_support::{Reply, event, eventually, list, pair, serve};
use mesh_control::kube::KubeStore;
use mesh_control::registry::{Health, TLS_MODE_LABEL, Workloads};
use mesh_control::snapshot::SnapshotBuilder;
use mesh_control::vip::VipAllocator;
use mesh_model::Kind;
use serde_json::{Value, json};

const HOST: &str = "legacy.mesh.internal";

fn pod(name: &str, app: &str, ip: &str, ready: bool, resource_version: &str) -> Value {
    let ready = if ready { "True" } else { "False" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"),
                     "resourceVersion": resource_version,
                     "labels": {"app": app, "pod-template-hash": "7d4b9c"},
                     "annotations": {"sidecar.mesh.dev/status": "{\"containers\":[\"mesh-proxy\"]}"}},
        "spec": {"serviceAccountName": "legacy", "nodeName": "node-a",
                 "containers": [{"name": app, "image": "legacy:1", "ports": [{"containerPort": 9080}]},
                                {"name": "mesh-proxy", "image": "mesh/mesh-proxy:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
                   "conditions": [
                       {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-24T09:00:00Z"},
                       {"type": "Ready", "status": ready, "lastTransitionTime": "2026-11-24T09:00:05Z"},
                       {"type": "ContainersReady", "status": ready, "lastTransitionTime": "2026-11-24T09:00:05Z"},
                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-24T09:00:00Z"}]}
    })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "uid": "u-node-a", "resourceVersion": "40",
                     "labels": {"topology.kubernetes.io/region": "eu-west-1",
                                "topology.kubernetes.io/zone": "eu-west-1a"}},
        "spec": {"podCIDR": "10.244.1.0/24"}
    })
}

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn service_entry() -> DynamicObject {
    object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "legacy", "namespace": "shop", "uid": "u-se", "resourceVersion": "50", "generation": 1},
        "spec": {"hosts": [HOST], "location": "MESH_INTERNAL", "resolution": "STATIC",
                 "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 9080}],
                 "workloadSelector": {"labels": {"app": "legacy"}}}
    }))
}

fn workload_entry() -> DynamicObject {
    object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": "legacy-vm", "namespace": "shop", "uid": "u-we", "resourceVersion": "51", "generation": 1},
        "spec": {"address": "192.168.10.5", "labels": {"app": "legacy"}, "serviceAccount": "legacy"}
    }))
}

#[tokio::test]
async fn a_service_entry_selects_its_namespaces_matching_pods_and_follows_their_readiness() {
    let (client, handle) = pair();
    let unready = Arc::new(tokio::sync::Notify::new());
    let pods_changed = unready.clone();
    let (_seen, _server) = serve(handle, move |req| {
        if req.is_watch() {
            if req.path == "/api/v1/pods" {
                return Reply::After(
                    pods_changed.clone(),
                    vec![event(
                        "MODIFIED",
                        pod("legacy-2", "legacy", "10.244.1.11", false, "101"),
                    )],
                );
            }
            return Reply::Hang;
        }
        match req.path.as_str() {
            "/api/v1/services" => Reply::Json(200, list("v1", "Service", "100", vec![])),
            "/apis/discovery.k8s.io/v1/endpointslices" => Reply::Json(
                200,
                list("discovery.k8s.io/v1", "EndpointSlice", "100", vec![]),
            ),
            "/api/v1/pods" => Reply::Json(
                200,
                list(
                    "v1",
                    "Pod",
                    "100",
                    vec![
                        pod("legacy-1", "legacy", "10.244.1.10", true, "30"),
                        pod("legacy-2", "legacy", "10.244.1.11", true, "31"),
                        pod("other-1", "other", "10.244.1.12", true, "32"),
                    ],
                ),
            ),
            "/api/v1/nodes" => Reply::Json(200, list("v1", "Node", "100", vec![node()])),
            other => panic!("unexpected list {other}"),
        }
    });
    let store = KubeStore::new();
    store.replace_kind(Kind::ServiceEntry, vec![service_entry()]);
    store.replace_kind(Kind::WorkloadEntry, vec![workload_entry()]);
    let workloads = Arc::new(Workloads::new(Duration::from_secs(60)));
    let (registry, tasks) = mesh_control::kube::registry::spawn_with_config(
        &client,
        "cluster.local".into(),
        workloads.clone(),
        Some(Arc::new(store.clone())),
    );
    let mut ready = registry.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();

    let builder = SnapshotBuilder::new(
        Arc::new(store.clone()),
        workloads.clone(),
        VipAllocator::default(),
    );
    let snap = builder.rebuild().await.unwrap();
    let s = &snap.services[HOST];
    let mut addresses: Vec<&str> = s.endpoints.iter().map(|e| e.address.as_str()).collect();
    addresses.sort();
    assert_eq!(
        addresses,
        ["10.244.1.10", "10.244.1.11", "192.168.10.5"],
        "the two app=legacy pods and the WorkloadEntry, not other-1"
    );
    let pod_ep = s
        .endpoints
        .iter()
        .find(|e| e.address == "10.244.1.10")
        .unwrap();
    assert_eq!(pod_ep.health, Health::Healthy);
    assert_eq!(pod_ep.service_account.as_deref(), Some("legacy"));
    assert_eq!(pod_ep.locality.as_deref(), Some("eu-west-1/eu-west-1a"));
    assert_eq!(pod_ep.labels["app"], "legacy");
    assert_eq!(
        pod_ep.labels.get(TLS_MODE_LABEL).map(String::as_str),
        Some("istio"),
        "injected pod: mTLS"
    );
    assert_eq!(pod_ep.port_for(&s.ports[0]), 9080, "the entry's targetPort");
    assert!(!s.external);

    // legacy-2's readiness probe starts failing.
    unready.notify_one();
    eventually("legacy-2 turns unhealthy", || {
        workloads.platform_services().iter().any(|p| {
            p.service.host == HOST
                && p.service
                    .endpoints
                    .iter()
                    .any(|e| e.address == "10.244.1.11" && e.health == Health::Unhealthy)
        })
    })
    .await;
    let snap = builder.rebuild().await.unwrap();
    let health = |ip: &str| {
        snap.services[HOST]
            .endpoints
            .iter()
            .find(|e| e.address == ip)
            .unwrap()
            .health
    };
    assert_eq!(health("10.244.1.11"), Health::Unhealthy);
    assert_eq!(health("10.244.1.10"), Health::Healthy);

    // The entry now selects app=other: the registry follows the config.
    let mut changed = service_entry();
    changed.data["spec"]["workloadSelector"]["labels"]["app"] = "other".into();
    changed.metadata.resource_version = Some("52".into());
    store.apply_object(Kind::ServiceEntry, changed);
    eventually("the entry selects other-1 only", || {
        workloads.platform_services().iter().any(|p| {
            let mut ips: Vec<&str> = p
                .service
                .endpoints
                .iter()
                .map(|e| e.address.as_str())
                .collect();
            ips.sort();
            p.service.host == HOST && ips == ["10.244.1.12"]
        })
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
