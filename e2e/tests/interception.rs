//! Transparent interception with the real rules in a pod namespace: the app's
//! outbound connections land on the proxy's outbound port, inbound ones on
//! the inbound port, the proxy's own uid is never redirected, and cleanup
//! leaves nothing behind. Stand-in "proxies" are demo apps listening on
//! 15001/15006 as uid 1337, so the test checks the rules alone.

use mesh_e2e::bins::workspace_bin;
use mesh_e2e::load::LoadReport;
use mesh_e2e::netns::{Node, Pod, e2e_available};

const DEMO_APP: &str = env!("CARGO_BIN_EXE_mesh-demo-app");
const LOAD: &str = env!("CARGO_BIN_EXE_mesh-load");

fn load(node: &Node, pod: &Pod, uid: Option<u32>, url: &str) -> LoadReport {
    let mut argv: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        argv.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "--".into(),
        ]);
    }
    argv.extend([
        LOAD.into(),
        url.into(),
        "-n".into(),
        "5".into(),
        "--rps".into(),
        "0".into(),
        "--timeout-ms".into(),
        "700".into(),
        "--group-by".into(),
        "/service".into(),
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = node.exec(&pod.netns, &argv).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_ok(node: &Node, pod: &Pod, url: &str) -> LoadReport {
    let mut report = LoadReport::default();
    for _ in 0..50 {
        report = load(node, pod, None, url);
        if report.ok == report.total {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    report
}

fn nat_rules(node: &Node, pod: &Pod) -> String {
    String::from_utf8(
        node.exec(&pod.netns, &["iptables-save", "-t", "nat"])
            .unwrap()
            .stdout,
    )
    .unwrap()
}

#[test]
fn rules_redirect_app_traffic_and_spare_the_proxy() {
    if !e2e_available("rules_redirect_app_traffic_and_spare_the_proxy") {
        return;
    }
    let intercept = workspace_bin("mesh-intercept");
    let intercept = intercept.to_str().unwrap();
    let mut node = Node::create("interception").unwrap();
    let app = node.add_pod("app").unwrap();
    let peer = node.add_pod("peer").unwrap();

    // Applying twice must leave one set of rules (idempotent).
    for _ in 0..2 {
        node.exec(&app.netns, &[intercept, "-o", "9999"]).unwrap();
    }
    let rules = nat_rules(&node, &app);
    assert_eq!(
        rules
            .matches("-A PREROUTING -p tcp -j MESH_INBOUND")
            .count(),
        1,
        "{rules}"
    );
    assert_eq!(
        rules.matches("-A OUTPUT -p tcp -j MESH_OUTPUT").count(),
        1,
        "{rules}"
    );

    for (label, port) in [("outbound-capture", "15001"), ("inbound-capture", "15006")] {
        let listen = format!("0.0.0.0:{port}");
        node.spawn(
            label,
            &app.netns.clone(),
            Some(1337),
            &[DEMO_APP, "--service", label, "--listen", &listen],
            &[],
        )
        .unwrap();
    }

    // The app (root here, any uid but 1337) calling a service address that
    // has no route lands on the outbound port.
    let out = wait_ok(&node, &app, "http://240.240.0.5:9080/reviews");
    assert_eq!(
        out.by_group.get("outbound-capture"),
        Some(&5),
        "{out:?}\n{}",
        node.log_tail(10)
    );
    // An excluded outbound port is not captured: the connection goes nowhere.
    let excluded = load(&node, &app, None, "http://240.240.0.5:9999/");
    assert_eq!(excluded.ok, 0, "{excluded:?}");
    // The proxy's own uid is never redirected (or it would loop).
    let proxy_own = load(&node, &app, Some(1337), "http://240.240.0.5:9080/");
    assert_eq!(proxy_own.ok, 0, "{proxy_own:?}");

    // A peer calling the app's port lands on the inbound port; the proxy's
    // health port is excluded from capture.
    let url = format!("http://{}:9080/", app.ip);
    let inbound = wait_ok(&node, &peer, &url);
    assert_eq!(
        inbound.by_group.get("inbound-capture"),
        Some(&5),
        "{inbound:?}"
    );
    let health = load(&node, &peer, None, &format!("http://{}:15021/", app.ip));
    assert_eq!(health.ok, 0, "{health:?}");

    // Dry run prints the plan; cleanup removes every rule and chain.
    let dry = node.exec(&app.netns, &[intercept, "--dry-run"]).unwrap();
    assert!(
        String::from_utf8_lossy(&dry.stdout)
            .contains("-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001")
    );
    node.exec(&app.netns, &[intercept, "--cleanup"]).unwrap();
    let after =
        String::from_utf8(node.exec(&app.netns, &["iptables-save"]).unwrap().stdout).unwrap();
    assert!(!after.contains("MESH_"), "{after}");
    let uncaptured = load(&node, &app, None, "http://240.240.0.5:9080/");
    assert_eq!(uncaptured.ok, 0, "{uncaptured:?}");
}
