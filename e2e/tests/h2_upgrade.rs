//! HTTP/2 between sidecars end to end (issue 5), on the explicit-mode
//! loopback mesh (no root needed): a DestinationRule with
//! `h2UpgradePolicy: UPGRADE` makes productpage's sidecar speak h2 over
//! mTLS to reviews' sidecar, which forwards to the app; the caller's SPIFFE
//! ID still reaches the app, and the server sidecar's access log shows the
//! protocol it received (HTTP/1.1 before the rule, HTTP/2.0 after).

use std::time::Duration;

use mesh_e2e::demo::Reply;
use mesh_e2e::explicit::{ExplicitMesh, ExplicitWorkload};
use mesh_e2e::mesh::{http_get, poll};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";

const UPGRADE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
";

/// The server sidecar's access log lines for requests to the app whose
/// path is `path`.
fn inbound_lines(mesh: &ExplicitMesh, path: &str) -> Vec<String> {
    let log =
        std::fs::read_to_string(mesh.log_dir().join("reviews-v1-proxy.log")).unwrap_or_default();
    strip_ansi(&log)
        .lines()
        .filter(|l| {
            l.contains("access_log")
                && l.contains("upstream_cluster=inbound|9080||")
                && l.contains(&format!("path={path} "))
        })
        .map(str::to_owned)
        .collect()
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// productpage's app calls reviews at `path` through the sidecars; returns
/// reviews' reply.
fn call(mesh: &ExplicitMesh, app: u16, path: &str) -> Result<serde_json::Value, String> {
    let url = format!("http://127.0.0.1:{app}{path}");
    let (status, body) = http_get(None, &url).map_err(|e| e.to_string())?;
    let r: Reply = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    match r.upstreams.first() {
        Some(u) if status == 200 && u.status == 200 => Ok(u.body.clone()),
        _ => Err(format!("{status} {body}\n{}", mesh.logs())),
    }
}

#[test]
fn h2_upgrade_policy_makes_sidecars_speak_http2_and_keeps_the_caller_identity() {
    let mut mesh = ExplicitMesh::start().unwrap_or_else(|e| panic!("{e}"));
    mesh.workload(ExplicitWorkload::server("reviews-v1", "reviews", "v1"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The demo app calls its upstreams with the path it was asked for.
    let page = mesh
        .workload(ExplicitWorkload {
            upstreams: vec!["http://reviews:9080/reviews".into()],
            ..ExplicitWorkload::server("productpage-v1", "productpage", "v1")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.wait_synced(2).unwrap_or_else(|e| panic!("{e}"));

    // Without the rule: HTTP/1.1 between the sidecars.
    let r = poll(
        "productpage -> reviews through the sidecars",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || call(&mesh, page.app, "/"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["caller"], CLIENT_ID, "{r}");
    let before = inbound_lines(&mesh, "/reviews");
    assert!(
        !before.is_empty() && before.iter().all(|l| l.contains("protocol=HTTP/1.1")),
        "{before:?}\n{}",
        mesh.logs()
    );

    mesh.apply("h2-upgrade", UPGRADE)
        .unwrap_or_else(|e| panic!("{e}"));
    // Once the client sidecar has the rule, reviews' sidecar receives h2.
    poll(
        "reviews' sidecar receiving HTTP/2 from its peer",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let r = call(&mesh, page.app, "/")?;
            if r["caller"] != CLIENT_ID {
                return Err(format!("caller lost: {r}"));
            }
            let n = inbound_lines(&mesh, "/reviews")
                .iter()
                .filter(|l| l.contains("protocol=HTTP/2.0"))
                .count();
            if n > 0 {
                Ok(())
            } else {
                Err("no HTTP/2.0 request in reviews' access log yet".into())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));

    // Steady state: every request goes over h2, with the caller's identity.
    let h2_before = inbound_lines(&mesh, "/reviews")
        .iter()
        .filter(|l| l.contains("protocol=HTTP/2.0"))
        .count();
    for _ in 0..5 {
        let r = call(&mesh, page.app, "/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r["caller"], CLIENT_ID, "{r}");
        assert_eq!(r["service"], "reviews", "{r}");
    }
    let lines = inbound_lines(&mesh, "/reviews");
    let h2_after = lines
        .iter()
        .filter(|l| l.contains("protocol=HTTP/2.0"))
        .count();
    assert_eq!(h2_after - h2_before, 5, "{lines:?}");
}
