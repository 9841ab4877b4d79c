//! The e2e scenarios on a whole local mesh (meshd and its CA, sidecars with real
//! interception, demo apps) in network namespaces: a canary moved from
//! 90/10 to 0/100 under steady load with no failed request, header-based
//! routing to v2, and proxy-status listing every pod SYNCED.

use std::time::Duration;

use mesh_e2e::mesh::{LocalMesh, Workload};
use mesh_e2e::netns::e2e_available;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn split(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}
"
    )
}

const HEADER_ROUTE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
";

/// A client and reviews v1 + v2, all SYNCED; returns the mesh, the client
/// pod and the reviews URL (by VIP, as a captured app would call it).
fn bookshop(test: &str) -> (LocalMesh, mesh_e2e::netns::Pod, String) {
    let mut mesh = LocalMesh::start(test);
    mesh.apply("subsets", SUBSETS);
    for version in ["v1", "v2"] {
        mesh.workload(Workload {
            name: &format!("reviews-{version}"),
            service_account: "reviews",
            service: Some("reviews"),
            version,
            svid_ttl: None,
        });
    }
    let client = mesh.workload(Workload::client("productpage"));
    mesh.wait_synced(3);
    let vip = mesh.vip(&client, REVIEWS);
    (mesh, client, format!("http://{vip}:9080/reviews"))
}

#[test]
fn canary_moves_from_90_10_to_0_100_without_a_failed_request() {
    if !e2e_available("canary_moves_from_90_10_to_0_100_without_a_failed_request") {
        return;
    }
    let (mesh, client, url) = bookshop("canary");
    mesh.apply("split", &split(90, 10));
    // Wait for the split to be in force (both versions answer).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut report = mesh.load(&client, &url, "/version", 400, 0, &[]);
    while report.by_group.len() < 2 || report.failed > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "90/10 never in force: {report:?}\n{}",
            mesh.node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
        report = mesh.load(&client, &url, "/version", 400, 0, &[]);
    }
    // v2 ~ Binomial(400, 0.1): mean 40, sd 6; accept ±4 sd.
    let v2 = *report.by_group.get("v2").unwrap_or(&0);
    assert!(
        (16..=64).contains(&v2),
        "v2 got {v2} of 400 under 90/10: {report:?}"
    );

    // Steady load across the switch to 0/100: not one request fails.
    let steady = std::thread::scope(|s| {
        let load = s.spawn(|| mesh.load(&client, &url, "/version", 300, 60, &[]));
        std::thread::sleep(Duration::from_secs(2));
        mesh.apply("split", &split(0, 100));
        load.join()
            .unwrap_or_else(|_| panic!("load thread panicked"))
    });
    assert_eq!(
        steady.failed, 0,
        "requests failed during the switch: {steady:?}"
    );
    assert_eq!(steady.ok, 300);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let after = mesh.load(&client, &url, "/version", 100, 0, &[]);
        if after.by_group.get("v2") == Some(&100) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "0/100 never in force: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn header_match_routes_to_v2_and_everyone_else_to_v1_with_all_proxies_synced() {
    if !e2e_available("header_match_routes_to_v2_and_everyone_else_to_v1_with_all_proxies_synced") {
        return;
    }
    let (mesh, client, url) = bookshop("header-routing");
    mesh.apply("header-route", HEADER_ROUTE);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let jason = mesh.load(&client, &url, "/version", 50, 0, &["end-user: jason"]);
        let others = mesh.load(&client, &url, "/version", 50, 0, &[]);
        if jason.by_group.get("v2") == Some(&50) && others.by_group.get("v1") == Some(&50) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "header routing never exact: {jason:?} {others:?}\n{}",
            mesh.node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // proxy-status: every pod connected and SYNCED after the change.
    mesh.wait_synced(3);
    let status = mesh.proxy_status();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for want in [
        "reviews-v1.default",
        "reviews-v2.default",
        "productpage.default",
    ] {
        assert!(
            names.contains(&want),
            "{want} missing from proxy-status: {names:?}"
        );
    }
}

fn wait_until_serving(mesh: &LocalMesh, client: &mesh_e2e::netns::Pod, url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = mesh.load(client, url, "/version", 20, 0, &[]);
        if r.ok == 20 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never served: {r:?}\n{}",
            mesh.node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn traffic_keeps_flowing_while_meshd_restarts_and_proxies_resync() {
    if !e2e_available("traffic_keeps_flowing_while_meshd_restarts_and_proxies_resync") {
        return;
    }
    let (mut mesh, client, url) = bookshop("meshd-restart");
    wait_until_serving(&mesh, &client, &url);
    // 6 s of steady load; meshd is gone for 2 s in the middle of it.
    let log = mesh.start_load(&client, "steady-load", &url, 300, 50);
    std::thread::sleep(Duration::from_secs(1));
    mesh.restart_meshd(Duration::from_secs(2));
    let report = mesh.wait_load(&log, Duration::from_secs(60));
    assert_eq!(
        report.failed, 0,
        "requests failed while meshd restarted: {report:?}"
    );
    assert_eq!(report.ok, 300);
    // The proxies reconnect to the new meshd and are SYNCED again.
    mesh.wait_synced(3);
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    if !e2e_available("certificates_rotate_under_load_without_a_failed_request") {
        return;
    }
    let mut mesh = LocalMesh::start("cert-rotation");
    // 6 s certificates: renewed at about half-life, so several rotations
    // happen during the load.
    let _server = mesh.workload(Workload {
        name: "reviews-v1",
        service_account: "reviews",
        service: Some("reviews"),
        version: "v1",
        svid_ttl: Some(6),
    });
    let client = mesh.workload(Workload {
        name: "productpage",
        service_account: "productpage",
        service: None,
        version: "v1",
        svid_ttl: Some(6),
    });
    mesh.wait_synced(2);
    let vip = mesh.vip(&client, REVIEWS);
    let url = format!("http://{vip}:9080/reviews");
    wait_until_serving(&mesh, &client, &url);
    let log = mesh.start_load(&client, "rotation-load", &url, 400, 40);
    let report = mesh.wait_load(&log, Duration::from_secs(60));
    assert_eq!(
        report.failed, 0,
        "requests failed across rotations: {report:?}"
    );
    for proxy in ["reviews-v1-proxy", "productpage-proxy"] {
        let text =
            std::fs::read_to_string(mesh.node.log_dir().join(format!("{proxy}.log"))).unwrap();
        let obtained = text.matches("workload certificate obtained").count();
        assert!(
            obtained >= 3,
            "{proxy} got {obtained} certificates in 10 s of 6 s certificates"
        );
    }
}
