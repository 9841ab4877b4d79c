//! Explicit mode without root (docs/xds.md, "Explicit mode"): meshd with its
//! CA, two demo apps and two sidecars in explicit mode, all plain processes
//! on 127.0.0.1. Nothing here needs root or iptables, so this test runs
//! everywhere (it proves the non-root path).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mesh_e2e::demo::Reply;
use mesh_e2e::explicit::{ExplicitMesh, ExplicitWorkload, Ports};
use mesh_e2e::mesh::{MeshError, http_get, poll};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

/// One raw HTTP/1.1 exchange; `Err` when the connection is refused or
/// closed without a response.
fn raw(port: u16, request: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

fn reply(body: &str) -> Result<Reply, String> {
    serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
}

#[test]
fn explicit_sidecars_route_by_host_with_mtls_and_strict_refuses_plain_text() {
    let mut mesh = ExplicitMesh::start().unwrap_or_else(|e| panic!("{e}"));
    let reviews = mesh
        .workload(ExplicitWorkload::server("reviews-v1", "reviews", "v1"))
        .unwrap_or_else(|e| panic!("{e}"));
    let page = mesh
        .workload(ExplicitWorkload {
            upstreams: vec!["http://reviews:9080/reviews".into()],
            ..ExplicitWorkload::server("productpage-v1", "productpage", "v1")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.wait_synced(2).unwrap_or_else(|e| panic!("{e}"));

    // productpage's app calls reviews via its sidecar's outbound port (Host
    // routing); its sidecar dials reviews' sidecar on its inbound port with
    // mTLS, which hands the caller's SPIFFE ID to the app in XFCC.
    let app_url = format!("http://127.0.0.1:{}/", page.app);
    let r = poll(
        "productpage -> reviews through the sidecars",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let (status, body) = http_get(None, &app_url).map_err(|e| e.to_string())?;
            let r = reply(&body)?;
            match r.upstreams.first() {
                Some(u) if status == 200 && u.status == 200 => Ok(u.body.clone()),
                _ => Err(format!("{status} {body}")),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    assert_eq!(r["service"], "reviews", "{r}");
    assert_eq!(r["caller"], CLIENT_ID, "{r}");

    // Absolute form (what HTTP_PROXY clients send) to the outbound port.
    let (status, body) = raw(
        page.outbound,
        "GET http://reviews:9080/abs HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    assert_eq!(status, 200, "{body}");
    let r = reply(&body).unwrap();
    assert_eq!((r.service.as_str(), r.path.as_str()), ("reviews", "/abs"));
    assert_eq!(r.caller.as_deref(), Some(CLIENT_ID));

    // PERMISSIVE (nothing applied): plain text to the inbound port is
    // served, without a caller.
    let plain = "GET /plain HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(reviews.inbound, plain).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(reply(&body).unwrap().caller, None);

    // STRICT: plain text to the server sidecar is refused...
    mesh.apply("strict", STRICT)
        .unwrap_or_else(|e| panic!("{e}"));
    poll(
        "plain text refused under STRICT",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || match raw(reviews.inbound, plain) {
            Err(_) => Ok(()),
            Ok((status, body)) => Err(format!("still served: {status} {body}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    // ...while mTLS from the client's sidecar still goes through.
    let (status, body) = http_get(None, &app_url).unwrap();
    assert_eq!(status, 200, "{body}");
    let r = reply(&body).unwrap();
    assert_eq!(r.upstreams[0].status, 200, "{body}");
    assert_eq!(r.upstreams[0].body["caller"], CLIENT_ID);
}

/// A port picked free can be taken before the sidecar binds it (another
/// process's outgoing connection may get it as its ephemeral port): the
/// harness sees the sidecar exit with "Address already in use", stops what
/// it started and, in `workload`, starts again on other ports.
#[test]
fn a_sidecar_whose_port_was_taken_is_reported_and_started_again_elsewhere() {
    let mut mesh = ExplicitMesh::start().unwrap_or_else(|e| panic!("{e}"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = Ports {
        admin: taken.local_addr().unwrap().port(),
        ..Ports::pick().unwrap()
    };
    let w = ExplicitWorkload::server("reviews-v1", "reviews", "v1");
    match mesh.start_workload(&w, ports) {
        Err(MeshError::ChildExited {
            label, log_tail, ..
        }) => {
            assert_eq!(label, "reviews-v1-proxy");
            assert!(log_tail.contains("Address already in use"), "{log_tail}");
        }
        other => panic!("expected the sidecar to exit: {other:?}"),
    }
    assert!(
        mesh.processes().iter().all(|(l, _)| l == "meshd"),
        "only meshd is left: {:?}",
        mesh.processes()
    );
    let again = mesh.workload(w).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(again.admin, ports.admin);
    mesh.wait_synced(1).unwrap_or_else(|e| panic!("{e}"));
}
