//! Resiliency end to end, on the real meshd and sidecars in network
//! namespaces: a retry policy hiding a flaky reviews, outlier detection
//! ejecting an endpoint that always fails (and `/clusters` showing it), and
//! a 50% abort fault seen by the client as about half its requests failing.

use std::time::{Duration, Instant};

use mesh_e2e::mesh::{LocalMesh, Workload, http_get};
use mesh_e2e::netns::{Pod, e2e_available};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// A reviews pod whose demo app fails `error_rate` of its requests (500),
/// with its sidecar registered as an endpoint of `reviews`.
fn reviews(mesh: &mut LocalMesh, name: &str, error_rate: f64) -> Pod {
    let pod = mesh.node.add_pod(name).expect("pod");
    let app = mesh.bin("mesh-demo-app").expect("mesh-demo-app");
    let rate = error_rate.to_string();
    mesh.node
        .spawn(
            &format!("{name}-app"),
            &pod.netns.clone(),
            None,
            &[
                &app,
                "--service",
                "reviews",
                "--service-version",
                "v1",
                "--listen",
                "0.0.0.0:9080",
                "--error-rate",
                &rate,
            ],
            &[],
        )
        .expect("start the app");
    mesh.sidecar(
        &pod,
        Workload {
            name,
            service_account: "reviews",
            service: Some("reviews"),
            version: "v1",
            svid_ttl: None,
        },
    )
    .unwrap_or_else(|e| panic!("sidecar {name}: {e}\n{}", mesh.node.log_tail(20)));
    pod
}

fn client(mesh: &mut LocalMesh) -> Pod {
    mesh.workload(Workload::client("productpage"))
}

/// GETs a path of the client sidecar's admin (15000) or metrics (15090).
fn sidecar_text(pod: &Pod, url: &str) -> String {
    match http_get(Some(&pod.netns), url) {
        Ok((200, body)) => body,
        other => panic!("GET {url}: {other:?}"),
    }
}

/// Sum of a Prometheus counter over its label sets.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_retry_policy_hides_a_flaky_reviews() {
    if !e2e_available("a_retry_policy_hides_a_flaky_reviews") {
        return;
    }
    let mut mesh = LocalMesh::start("retries");
    reviews(&mut mesh, "reviews-flaky", 0.3);
    let client = client(&mut mesh);
    mesh.wait_synced(2);
    let url = format!("http://{}:9080/reviews", mesh.vip(&client, REVIEWS));

    // Without a retry policy about 30% fail (Binomial(200, 0.3): mean 60).
    let before = mesh.load(&client, &url, "/version", 200, 0, &[]);
    assert!(
        (25..=100).contains(&before.failed),
        "a 30% flaky app without retries: {before:?}"
    );

    // Up to 5 retries on 5xx, with room for concurrent retries (the
    // default max_retries of 3 would overflow under 4 parallel clients).
    mesh.apply(
        "retries",
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {http: {maxRetries: 100}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - retries: {attempts: 5, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
",
    );
    // A request now fails only if six tries in a row do: 0.3^6 ≈ 0.07%.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let r = mesh.load(&client, &url, "/version", 400, 0, &[]);
        if r.failed <= 2 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        after.failed <= 2,
        "retries should hide the flaky app: {after:?}\n{}",
        mesh.node.log_tail(20)
    );
    let metrics = sidecar_text(&client, "http://127.0.0.1:15090/stats/prometheus");
    let retries = counter(&metrics, "envoy_cluster_upstream_rq_retry_total");
    // About 0.3 / 0.7 retries per request: well over 50 for 400 requests.
    assert!(retries > 50.0, "retries counted: {retries}\n{metrics}");
}

#[test]
fn outlier_detection_ejects_the_endpoint_that_always_fails() {
    if !e2e_available("outlier_detection_ejects_the_endpoint_that_always_fails") {
        return;
    }
    let mut mesh = LocalMesh::start("outlier");
    mesh.apply(
        "outlier",
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 50}
",
    );
    reviews(&mut mesh, "reviews-good", 0.0);
    let bad = reviews(&mut mesh, "reviews-bad", 1.0);
    let client = client(&mut mesh);
    mesh.wait_synced(3);
    let url = format!("http://{}:9080/reviews", mesh.vip(&client, REVIEWS));

    // Wait for both endpoints to be in the client's config.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = sidecar_text(&client, "http://127.0.0.1:15000/clusters");
        let eps = clusters
            .lines()
            .filter(|l| l.starts_with(&format!("outbound|9080||{REVIEWS}::")))
            .filter(|l| l.contains("::health_flags::"))
            .count();
        if eps == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two endpoints never arrived:\n{clusters}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The bad endpoint fails until three 5xx in a row eject it (a few more
    // may be in flight over the 4 parallel connections).
    let first = mesh.load(&client, &url, "/version", 100, 0, &[]);
    assert!(
        (3..=10).contains(&first.failed),
        "failures before the ejection: {first:?}"
    );
    // Then nothing reaches it.
    let after = mesh.load(&client, &url, "/version", 300, 0, &[]);
    assert_eq!(after.failed, 0, "after the ejection: {after:?}");

    let clusters = sidecar_text(&client, "http://127.0.0.1:15000/clusters");
    let flag = format!(
        "outbound|9080||{REVIEWS}::{}:9080::health_flags::/failed_outlier_check",
        bad.ip
    );
    assert!(clusters.contains(&flag), "{flag} missing in:\n{clusters}");
    let metrics = sidecar_text(&client, "http://127.0.0.1:15090/stats/prometheus");
    assert!(
        counter(
            &metrics,
            "envoy_cluster_outlier_detection_ejections_enforced_total"
        ) >= 1.0,
        "{metrics}"
    );
}

#[test]
fn a_half_abort_fault_fails_about_half_the_requests() {
    if !e2e_available("a_half_abort_fault_fails_about_half_the_requests") {
        return;
    }
    let mut mesh = LocalMesh::start("fault");
    reviews(&mut mesh, "reviews-v1", 0.0);
    let client = client(&mut mesh);
    mesh.wait_synced(2);
    let url = format!("http://{}:9080/reviews", mesh.vip(&client, REVIEWS));
    let healthy = mesh.load(&client, &url, "/version", 50, 0, &[]);
    assert_eq!(healthy.failed, 0, "{healthy:?}");

    mesh.apply(
        "fault",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: reviews}}]
",
    );
    // Wait until the fault is in force, then measure on a fresh run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while mesh.load(&client, &url, "/version", 40, 0, &[]).failed == 0 {
        assert!(Instant::now() < deadline, "the fault never applied");
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = mesh.load(&client, &url, "/version", 400, 0, &[]);
    // Binomial(400, 0.5): mean 200, sd 10; 40%..60% is ±4 sd.
    assert!(
        (160..=240).contains(&r.failed),
        "about half should fail: {r:?}"
    );
    assert_eq!(
        r.by_status.get(&503).copied().unwrap_or(0),
        r.failed,
        "every failure is the injected 503: {r:?}"
    );
}
