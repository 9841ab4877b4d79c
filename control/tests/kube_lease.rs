//! Leader election against a scripted API server: acquire a free lease,
//! renew our own, leave a held unexpired lease alone, take an expired one,
//! lose a race, and give leadership up when renewals keep failing.

mod kube_support;

use std::time::Duration;

use http::Method;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube_support::{Reply, answer, next, pair, serve, status};
use mesh_control::kube::lease::{self, Attempt, LeaseConfig};
use serde_json::{Value, json};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mesh-system/leases/meshd-leader";
const NOW: &str = "2026-11-24T15:00:00.000000Z";

fn cfg() -> LeaseConfig {
    LeaseConfig::new("mesh-system", "meshd-7c9d-abcde")
}

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// A Lease as the API server returns it.
fn lease_held(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "meshd-leader",
            "namespace": "mesh-system",
            "uid": "6f1e0d3c-2b1a-4c5d-8e7f-0a1b2c3d4e5f",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-24T09:00:00Z"
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-11-24T09:00:00.000000Z",
            "renewTime": renewed,
            "leaseTransitions": transitions
        }
    })
}

async fn round(
    script: Vec<(Method, u16, Value)>,
) -> (Result<Attempt, kube::Error>, Vec<kube_support::Seen>) {
    let (client, mut handle) = pair();
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "mesh-system");
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut parked = Vec::new();
        for (method, code, body) in script {
            let (req, send) = next(&mut handle).await.expect("a request");
            assert_eq!(req.method, method, "{req:?}");
            answer(send, Reply::Json(code, body), &mut parked);
            seen.push(req);
        }
        seen
    });
    let out = lease::try_acquire_or_renew(&api, &cfg(), now()).await;
    (out, server.await.unwrap())
}

#[tokio::test]
async fn a_missing_lease_is_created_with_us_as_holder() {
    let (out, seen) = round(vec![
        (
            Method::GET,
            404,
            status(
                404,
                "NotFound",
                "leases.coordination.k8s.io \"meshd-leader\" not found",
            ),
        ),
        (Method::POST, 201, lease_held("meshd-7c9d-abcde", NOW, 0)),
    ])
    .await;
    assert_eq!(out.unwrap(), Attempt::Acquired);
    assert_eq!(seen[0].path, PATH);
    assert_eq!(
        seen[1].path,
        "/apis/coordination.k8s.io/v1/namespaces/mesh-system/leases"
    );
    let spec = &seen[1].body["spec"];
    assert_eq!(spec["holderIdentity"], "meshd-7c9d-abcde");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["renewTime"], spec["acquireTime"]);
    assert_eq!(spec["leaseTransitions"], 0);
}

#[tokio::test]
async fn our_lease_is_renewed_with_the_read_resource_version() {
    let (out, seen) = round(vec![
        (
            Method::GET,
            200,
            lease_held("meshd-7c9d-abcde", "2026-11-24T14:59:55.000000Z", 3),
        ),
        (Method::PUT, 200, lease_held("meshd-7c9d-abcde", NOW, 3)),
    ])
    .await;
    assert_eq!(out.unwrap(), Attempt::Renewed);
    assert_eq!(seen[1].path, PATH);
    let body = &seen[1].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "4711",
        "optimistic concurrency"
    );
    assert_eq!(body["spec"]["holderIdentity"], "meshd-7c9d-abcde");
    assert_eq!(
        body["spec"]["leaseTransitions"], 3,
        "a renewal is no transition"
    );
    assert_eq!(
        body["spec"]["acquireTime"], "2026-11-24T09:00:00.000000Z",
        "the acquire time stays"
    );
    let renewed: Timestamp = body["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
    assert_eq!(renewed, now());
}

#[tokio::test]
async fn a_held_unexpired_lease_is_left_alone() {
    // Renewed 5 s ago, valid for 15 s: no write at all.
    let (out, seen) = round(vec![(
        Method::GET,
        200,
        lease_held("meshd-other-xyz", "2026-11-24T14:59:55.000000Z", 1),
    )])
    .await;
    assert_eq!(out.unwrap(), Attempt::HeldBy("meshd-other-xyz".into()));
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    // Renewed 20 s ago, valid for 15 s: the holder is gone.
    let (out, seen) = round(vec![
        (
            Method::GET,
            200,
            lease_held("meshd-other-xyz", "2026-11-24T14:59:40.000000Z", 1),
        ),
        (Method::PUT, 200, lease_held("meshd-7c9d-abcde", NOW, 2)),
    ])
    .await;
    assert_eq!(out.unwrap(), Attempt::Acquired);
    let spec = &seen[1].body["spec"];
    assert_eq!(spec["holderIdentity"], "meshd-7c9d-abcde");
    assert_eq!(spec["leaseTransitions"], 2);
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert_eq!(seen[1].body["metadata"]["resourceVersion"], "4711");
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_leading() {
    let (out, _) = round(vec![
        (Method::GET, 200, lease_held("meshd-other-xyz", "2026-11-24T14:59:40.000000Z", 1)),
        (
            Method::PUT,
            409,
            status(409, "Conflict", "Operation cannot be fulfilled on leases.coordination.k8s.io \"meshd-leader\": the object has been modified; please apply your changes to the latest version and try again"),
        ),
    ])
    .await;
    assert!(!out.unwrap().is_leader());
}

#[tokio::test(start_paused = true)]
async fn leadership_is_given_up_when_renewals_fail_for_a_lease_duration() {
    // The API server answers the first round, then fails every request.
    let (client, handle) = pair();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let _server = serve(handle, move |req| {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match (n, &req.method) {
            (0, &Method::GET) => Reply::Json(404, status(404, "NotFound", "not found")),
            (1, &Method::POST) => Reply::Json(201, lease_held("meshd-7c9d-abcde", NOW, 0)),
            _ => Reply::Json(
                500,
                status(500, "InternalError", "etcdserver: request timed out"),
            ),
        }
    });
    let (mut leader, task) = lease::spawn(client, cfg());
    leader.wait_for(|l| *l).await.unwrap();
    let start = tokio::time::Instant::now();
    leader.wait_for(|l| !*l).await.unwrap();
    let lost_after = start.elapsed();
    assert!(
        lost_after >= Duration::from_secs(10) && lost_after <= Duration::from_secs(20),
        "kept leading through short failures, gave up within a lease duration: {lost_after:?}"
    );
    task.abort();
}
