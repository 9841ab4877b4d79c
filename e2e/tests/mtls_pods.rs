//! Scenario 1 of the e2e suite: mTLS between two pods. Real processes in
//! network namespaces: the CA (`mesh-ca serve`) and meshd on the node, each
//! pod with `mesh-proxy init` rules and a sidecar as uid 1337 next to its
//! app. The server's app sees the client's SPIFFE ID (the server sidecar
//! verified it and passed it on in `x-forwarded-client-cert`), and with a
//! mesh-wide STRICT policy a pod without a sidecar is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;
use mesh_e2e::load::LoadReport;
use mesh_e2e::netns::{NODE_IP, Node, Pod, e2e_available};

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

fn bin(name: &str) -> String {
    workspace_bin(name).to_string_lossy().into_owned()
}

fn token(ca_dir: &Path, sa: &str) -> String {
    let out = std::process::Command::new(bin("mesh-ca"))
        .args(["token", "create", "--dir", ca_dir.to_str().unwrap()])
        .args([
            "--spiffe-id",
            &format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            "--single-use",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Interception rules, then the sidecar as uid 1337.
fn sidecar(node: &mut Node, pod: &Pod, sa: &str, service: Option<&str>, ca_dir: &Path) {
    node.exec(&pod.netns, &[&bin("mesh-proxy"), "init"])
        .unwrap();
    let token = token(ca_dir, sa);
    let root = ca_dir.join("root-cert.pem");
    let ip = pod.ip.to_string();
    let mut argv = vec![
        bin("mesh-proxy"),
        "run".into(),
        "--xds-address".into(),
        format!("http://{NODE_IP}:15010"),
        "--namespace".into(),
        "default".into(),
        "--service-account".into(),
        sa.into(),
        "--workload-name".into(),
        sa.into(),
        "--labels".into(),
        format!("app={sa}"),
        "--instance-ip".into(),
        ip,
        "--ca-address".into(),
        format!("https://{NODE_IP}:15012"),
        "--ca-root-cert".into(),
        root.to_string_lossy().into_owned(),
        "--join-token".into(),
        token,
    ];
    if let Some(service) = service {
        argv.extend([
            "--service-name".into(),
            service.into(),
            "--service-ports".into(),
            "http:9080".into(),
        ]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    node.spawn(
        &format!("{sa}-proxy"),
        &pod.netns.clone(),
        Some(1337),
        &argv,
        &[],
    )
    .unwrap();
}

fn load(node: &Node, pod: &Pod, url: &str, group_by: &str, n: u32) -> LoadReport {
    let n = n.to_string();
    let out = node
        .exec(
            &pod.netns,
            &[
                &bin("mesh-load"),
                url,
                "-n",
                &n,
                "--rps",
                "0",
                "--concurrency",
                "2",
                "--timeout-ms",
                "2000",
                "--group-by",
                group_by,
            ],
        )
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn mtls_between_pods_carries_the_client_identity_and_strict_refuses_plaintext() {
    if !e2e_available("mtls_between_pods_carries_the_client_identity_and_strict_refuses_plaintext")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let out = std::process::Command::new(bin("mesh-ca"))
        .args([
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            ca_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut node = Node::create("mtls").unwrap();
    let node_ns = node.netns().to_string();
    let client = node.add_pod("client").unwrap();
    let server = node.add_pod("server").unwrap();
    let outsider = node.add_pod("outsider").unwrap();
    node.spawn(
        "ca",
        &node_ns,
        None,
        &[
            &bin("mesh-ca"),
            "serve",
            "--dir",
            ca_dir.to_str().unwrap(),
            "--listen",
            &format!("{NODE_IP}:15012"),
        ],
        &[],
    )
    .unwrap();
    let data = dir.path().join("meshd");
    node.spawn(
        "meshd",
        &node_ns,
        None,
        &[
            &bin("meshd"),
            "--data-dir",
            data.to_str().unwrap(),
            "--xds-addr",
            &format!("{NODE_IP}:15010"),
            "--http-addr",
            &format!("{NODE_IP}:15014"),
            "--debounce",
            "20ms",
        ],
        &[],
    )
    .unwrap();
    let api = format!("http://{NODE_IP}:15014");
    let policy = dir.path().join("strict.yaml");
    std::fs::write(&policy, STRICT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node
        .exec(
            &node_ns,
            &[
                &bin("meshctl"),
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

    node.spawn(
        "server-app",
        &server.netns.clone(),
        None,
        &[
            &bin("mesh-demo-app"),
            "--service",
            "server",
            "--listen",
            "0.0.0.0:9080",
        ],
        &[],
    )
    .unwrap();
    sidecar(&mut node, &server, "server", Some("server"), &ca_dir);
    sidecar(&mut node, &client, "client", None, &ca_dir);

    // The server's VIP, once meshd has registered its sidecar.
    let vip_pointer = "/services/server.default.svc.cluster.local/vip";
    let deadline = Instant::now() + Duration::from_secs(30);
    let vip = loop {
        let r = load(
            &node,
            &client,
            &format!("http://{NODE_IP}:15014/debug/registryz"),
            vip_pointer,
            1,
        );
        if let Some(vip) = r.by_group.keys().find(|k| k.starts_with("240.")) {
            break vip.trim_matches('"').to_string();
        }
        assert!(
            Instant::now() < deadline,
            "server never registered: {r:?}\n{}",
            node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The client app calls the service address; its sidecar originates mTLS,
    // the server's sidecar terminates it and names the caller.
    let url = format!("http://{vip}:9080/hello");
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let r = load(&node, &client, &url, "/caller", 20);
        if r.by_group.get(client_id) == Some(&20) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no mTLS calls got through: {r:?}\n{}",
            node.log_tail(25)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(report.failed, 0, "{report:?}");

    // STRICT: a pod without a sidecar reaching the server's port directly is
    // refused (its plain text matches no inbound chain).
    let plain = load(
        &node,
        &outsider,
        &format!("http://{}:9080/", server.ip),
        "/caller",
        5,
    );
    assert_eq!(
        plain.ok, 0,
        "plain text got through under STRICT: {plain:?}"
    );
}
