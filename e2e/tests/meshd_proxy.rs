//! meshd and mesh-proxy agree on the xDS contract: a transparent-mode proxy
//! in a pod namespace, with a mesh-wide STRICT PeerAuthentication (so its
//! inbound listener carries mTLS chains), ACKs every type meshd sends, and
//! meshd auto-registers it as an endpoint with a VIP.

use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;
use mesh_e2e::netns::{NODE_IP, Node, e2e_available};

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

#[test]
fn proxy_acks_everything_meshd_sends_including_strict_inbound_mtls() {
    if !e2e_available("proxy_acks_everything_meshd_sends_including_strict_inbound_mtls") {
        return;
    }
    let (meshd, meshctl, proxy) = (
        workspace_bin("meshd"),
        workspace_bin("meshctl"),
        workspace_bin("mesh-proxy"),
    );
    let (meshd, meshctl, proxy) = (
        meshd.to_str().unwrap(),
        meshctl.to_str().unwrap(),
        proxy.to_str().unwrap(),
    );
    let mut node = Node::create("meshd-proxy").unwrap();
    let pod = node.add_pod("reviews").unwrap();
    let data = tempfile::tempdir().unwrap();
    let xds = format!("{NODE_IP}:15010");
    let api = format!("http://{NODE_IP}:15014");
    let node_ns = node.netns().to_string();
    node.spawn(
        "meshd",
        &node_ns,
        None,
        &[
            meshd,
            "--data-dir",
            data.path().to_str().unwrap(),
            "--xds-addr",
            &xds,
            "--http-addr",
            &format!("{NODE_IP}:15014"),
            "--ca-addr",
            &format!("{NODE_IP}:15012"),
            "--debounce",
            "20ms",
        ],
        &[],
    )
    .unwrap();
    let policy = data.path().join("strict.yaml");
    std::fs::write(&policy, STRICT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node
        .exec(
            &node_ns,
            &[
                meshctl,
                "apply",
                "--meshd",
                &api,
                "-f",
                policy.to_str().unwrap(),
            ],
        )
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "meshd never accepted the policy\n{}",
            node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let ip = pod.ip.to_string();
    node.spawn(
        "proxy",
        &pod.netns.clone(),
        Some(1337),
        &[
            proxy,
            "run",
            "--xds-address",
            &format!("http://{xds}"),
            "--namespace",
            "shop",
            "--service-account",
            "reviews",
            "--workload-name",
            "reviews-v1",
            "--labels",
            "app=reviews,version=v1",
            "--service-name",
            "reviews",
            "--service-ports",
            "http:9080",
            "--instance-ip",
            &ip,
        ],
        &[],
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let proxy_status = loop {
        let out = node
            .exec(
                &node_ns,
                &[meshctl, "proxy-status", "--meshd", &api, "-o", "json"],
            )
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let synced = status[0]["states"].as_object().is_some_and(|s| {
            ["CDS", "LDS", "EDS", "RDS"]
                .iter()
                .all(|t| s.get(*t).and_then(|v| v.as_str()) == Some("SYNCED"))
        });
        if synced {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "proxy never SYNCED: {status}\n{}",
            node.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(proxy_status.as_array().unwrap().len(), 1);

    // meshd registered the workload as a healthy endpoint of its service.
    let load = workspace_bin("mesh-load");
    let out = node
        .exec(
            &node_ns,
            &[
                load.to_str().unwrap(),
                &format!("{api}/debug/registryz"),
                "-n",
                "1",
                "--group-by",
                "/services",
            ],
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 1, "{report}");
    let registry = report["by_group"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(
        registry.contains("reviews.shop.svc.cluster.local") && registry.contains(&ip),
        "{registry}"
    );
}
