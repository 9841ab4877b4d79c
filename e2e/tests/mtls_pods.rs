//! Scenario 1 of the e2e suite: mTLS between two pods. Real processes in
//! network namespaces: meshd with its embedded CA on the node, each
//! pod with `mesh-proxy init` rules and a sidecar as uid 1337 next to its
//! app. The server's app sees the client's SPIFFE ID (the server sidecar
//! verified it and passed it on in `x-forwarded-client-cert`), and with a
//! mesh-wide STRICT policy a pod without a sidecar is refused.

use std::time::{Duration, Instant};

use mesh_e2e::mesh::{LocalMesh, Workload};
use mesh_e2e::netns::e2e_available;

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

#[test]
fn mtls_between_pods_carries_the_client_identity_and_strict_refuses_plaintext() {
    if !e2e_available("mtls_between_pods_carries_the_client_identity_and_strict_refuses_plaintext")
    {
        return;
    }
    let mut mesh = LocalMesh::start("mtls");
    mesh.apply("strict", STRICT);
    let server = mesh.workload(Workload::server("server"));
    let client = mesh.workload(Workload::client("client"));
    let outsider = mesh.node.add_pod("outsider").unwrap();
    let vip = mesh.vip(&client, "server.default.svc.cluster.local");

    // The client app calls the service address; its sidecar originates mTLS,
    // the server's sidecar terminates it and names the caller.
    let url = format!("http://{vip}:9080/hello");
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let r = mesh.load(&client, &url, "/caller", 20, 0, &[]);
        if r.by_group.get(client_id) == Some(&20) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no mTLS calls got through: {r:?}\n{}",
            mesh.node.log_tail(25)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(report.failed, 0, "{report:?}");

    // STRICT: a pod without a sidecar reaching the server's port directly is
    // refused (its plain text matches no inbound chain).
    let plain = mesh.load(
        &outsider,
        &format!("http://{}:9080/", server.ip),
        "/caller",
        5,
        0,
        &[],
    );
    assert_eq!(
        plain.ok, 0,
        "plain text got through under STRICT: {plain:?}"
    );
}
