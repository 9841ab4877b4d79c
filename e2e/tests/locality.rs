//! Locality-aware load balancing end to end (issue 6), on the real meshd
//! and explicit-mode sidecars on loopback: a client sidecar in `r1/z1/`,
//! `reviews` served from `r1/z1/` and `r1/z2/` (each sidecar sends its
//! `--locality` as `node.locality`; meshd registers the endpoints with it and
//! shapes each client's EDS by the client's own locality).
//!
//! - failover: with outlier detection, all traffic stays in the client's
//!   zone; when the z1 app dies, its endpoint is ejected and z2 takes over.
//! - distribute: 80/20 between the zones, measured over 400 requests.
//!
//! Nothing here needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use mesh_e2e::demo::Reply;
use mesh_e2e::explicit::{ExplicitMesh, ExplicitWorkload, Ports};
use mesh_e2e::mesh::poll;

/// An explicit-mode sidecar in `locality`: serving `reviews` with a demo
/// app reporting `name` as its version when `serves`, else a client.
fn sidecar(mesh: &mut ExplicitMesh, name: &str, locality: &str, serves: bool) -> Ports {
    let base = if serves {
        ExplicitWorkload::server(name, "reviews", name)
    } else {
        ExplicitWorkload {
            name: name.into(),
            service_account: "productpage".into(),
            version: name.into(),
            ..ExplicitWorkload::default()
        }
    };
    mesh.workload(ExplicitWorkload {
        locality: Some(locality.into()),
        ..base
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One request to `reviews` through the client sidecar's outbound (HTTP
/// proxy) port: `Ok(version)` of the reviews that answered 200, else the
/// status or error.
fn call(outbound: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", outbound)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(
        b"GET http://reviews:9080/r HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    let reply: Reply = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    Ok(reply.version)
}

/// Versions that answered `n` requests (errors under `error`).
fn tally(outbound: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = call(outbound).unwrap_or_else(|e| format!("error {e}"));
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// meshd, a DestinationRule for `reviews`, reviews in z1 and z2 and a
/// client in z1, all SYNCED and the client reaching reviews. The rule is
/// applied first, so every proxy's first config already carries it.
fn start(rule: &str) -> (ExplicitMesh, u16) {
    let mut mesh = ExplicitMesh::start().unwrap_or_else(|e| panic!("{e}"));
    mesh.apply("reviews-dr", rule)
        .unwrap_or_else(|e| panic!("{e}"));
    sidecar(&mut mesh, "reviews-z1", "r1/z1/", true);
    sidecar(&mut mesh, "reviews-z2", "r1/z2/", true);
    let client = sidecar(&mut mesh, "productpage", "r1/z1/", false);
    mesh.wait_synced(3).unwrap_or_else(|e| panic!("{e}"));
    poll(
        "the client reaching reviews",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || call(client.outbound),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    (mesh, client.outbound)
}

const FAILOVER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
";

#[test]
fn traffic_stays_in_the_client_zone_and_fails_over_when_it_dies() {
    let (mut mesh, client) = start(FAILOVER);
    // Round robin over both endpoints would send half to z2: locality
    // failover keeps all of it in the client's zone.
    let before = tally(client, 100);
    assert_eq!(
        before.get("reviews-z1"),
        Some(&100),
        "all to z1: {before:?}\n{}",
        mesh.logs()
    );

    // Kill the z1 app: its sidecar answers 503, the client's sidecar
    // ejects it, and the next priority (z2) takes the traffic.
    let (_, pid) = mesh
        .processes()
        .into_iter()
        .find(|(l, _)| l == "reviews-z1-app")
        .expect("the z1 app");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    poll(
        "z2 answering after z1's ejection",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match call(client) {
            Ok(v) if v == "reviews-z2" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    let after = tally(client, 100);
    assert_eq!(
        after.get("reviews-z2"),
        Some(&100),
        "all to z2 once z1 is ejected: {after:?}\n{}",
        mesh.logs()
    );
    assert!(mesh.crashed().is_some_and(|c| c.label == "reviews-z1-app"));
}

const DISTRIBUTE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        distribute:
        - from: r1/z1/*
          to: {'r1/z1/*': 80, 'r1/z2/*': 20}
";

#[test]
fn distribute_splits_the_client_s_traffic_eighty_twenty() {
    let (mesh, client) = start(DISTRIBUTE);
    let seen = tally(client, 400);
    let z1 = seen.get("reviews-z1").copied().unwrap_or(0);
    let z2 = seen.get("reviews-z2").copied().unwrap_or(0);
    assert_eq!(z1 + z2, 400, "every request answered: {seen:?}");
    // Binomial(400, 0.8): mean 320, sd 8; round robin would give 200.
    assert!(
        (280..=360).contains(&z1),
        "about 80% to z1: {seen:?}\n{}",
        mesh.logs()
    );
}
