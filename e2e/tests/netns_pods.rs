//! The network-namespace harness: pods on the node's bridge reach each other
//! and nothing else, and everything is removed afterwards.

use mesh_e2e::load::LoadReport;
use mesh_e2e::netns::{Node, e2e_available};

const DEMO_APP: &str = env!("CARGO_BIN_EXE_mesh-demo-app");
const LOAD: &str = env!("CARGO_BIN_EXE_mesh-load");

#[test]
fn pods_talk_over_the_bridge_and_are_removed_on_drop() {
    if !e2e_available("pods_talk_over_the_bridge_and_are_removed_on_drop") {
        return;
    }
    let mut node = Node::create("bridge").unwrap();
    let server = node.add_pod("server").unwrap();
    let client = node.add_pod("client").unwrap();
    let listen = format!("{}:9080", server.ip);
    node.spawn(
        "server-app",
        &server.netns.clone(),
        None,
        &[
            DEMO_APP,
            "--service",
            "ratings",
            "--service-version",
            "v3",
            "--listen",
            &listen,
        ],
        &[],
    )
    .unwrap();

    // The app takes a moment to bind; mesh-load's own retries would hide
    // nothing, so poll until the first request answers.
    let url = format!("http://{listen}/ratings");
    let mut report = LoadReport::default();
    for _ in 0..50 {
        let out = node
            .exec(
                &client.netns,
                &[LOAD, &url, "-n", "20", "--rps", "0", "--timeout-ms", "1000"],
            )
            .unwrap();
        report = serde_json::from_slice(&out.stdout).unwrap();
        if report.ok == 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(report.ok, 20, "{report:?}\n{}", node.log_tail(20));
    assert_eq!(report.by_group.get("v3"), Some(&20));

    // The node has no way out: a pod cannot reach an address outside the bridge.
    let out = node
        .exec(
            &client.netns,
            &[
                LOAD,
                "http://198.19.0.1:80/",
                "-n",
                "1",
                "--timeout-ms",
                "500",
            ],
        )
        .unwrap();
    let outside: LoadReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outside.ok, 0);

    let names = [
        server.netns.clone(),
        client.netns.clone(),
        node.netns().to_string(),
    ];
    drop(node);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    for n in names {
        assert!(!left.contains(&n), "{n} still exists:\n{left}");
    }
}
