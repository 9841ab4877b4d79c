//! A TCP service between two pods (issue 5, Istio's TCP metadata exchange):
//! meshd registers `db` on `tcp:9000`, so the client pod's sidecar proxies
//! the connection as opaque TCP over mTLS, offering `istio-peer-exchange`,
//! and the server's TCP chain accepts it. The two sidecars exchange their
//! metadata in-band: the echo app sees exactly the client's bytes, and each
//! sidecar's TCP metrics name the workload on the other side.

use std::time::Duration;

use mesh_e2e::mesh::{LocalMesh, Workload, http_get, poll};
use mesh_e2e::netns::{e2e_available, in_netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `istio_tcp_connections_closed_total` line of the sidecar in `netns`
/// whose labels contain `wanted`, once there.
fn closed_line(mesh: &LocalMesh, netns: &str, wanted: &str) -> String {
    poll(
        "the TCP connection in the sidecar's metrics",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let (status, body) = http_get(Some(netns), "http://127.0.0.1:15090/stats/prometheus")
                .map_err(|e| e.to_string())?;
            body.lines()
                .find(|l| {
                    l.starts_with("istio_tcp_connections_closed_total{") && l.contains(wanted)
                })
                .map(str::to_owned)
                .ok_or_else(|| format!("{status}: no closed TCP connection with {wanted}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.node.log_tail(25)))
}

#[test]
fn tcp_between_pods_exchanges_metadata_and_keeps_the_bytes_intact() {
    if !e2e_available("tcp_between_pods_exchanges_metadata_and_keeps_the_bytes_intact") {
        return;
    }
    let mut mesh = LocalMesh::start("tcp");
    let db = mesh.node.add_pod("db").unwrap();
    // The app: reads until the caller half-closes, answers with the bytes
    // reversed. It lives on a thread of its own inside the pod's namespace.
    let db_netns = db.netns.clone();
    std::thread::spawn(move || {
        let _ = in_netns(&db_netns, || async {
            let l = tokio::net::TcpListener::bind("0.0.0.0:9000").await.unwrap();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() {
                        got.reverse();
                        let _ = s.write_all(&got).await;
                    }
                });
            }
        });
    });
    let w = Workload::server("db");
    mesh.sidecar_serving(&db, w, "tcp:9000")
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.node.log_tail(25)));
    let client = mesh.workload(Workload::client("client"));
    let vip = mesh.vip(&client, "db.default.svc.cluster.local");
    let target = format!("{vip}:9000");
    let client_netns = client.netns.clone();
    let echoed = poll(
        "an echo through both sidecars",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let target = target.clone();
            let got = in_netns(&client_netns, move || async move {
                let mut s = tokio::net::TcpStream::connect(&target)
                    .await
                    .map_err(|e| e.to_string())?;
                s.write_all(b"0123456789")
                    .await
                    .map_err(|e| e.to_string())?;
                s.shutdown().await.map_err(|e| e.to_string())?;
                let mut back = Vec::new();
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
                    .await
                    .map_err(|_| "no answer".to_string())?
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(back)
            })
            .map_err(|e| e.to_string())??;
            // Before the routes arrive the connection may pass through or
            // close empty: wait for the answer.
            if got.is_empty() {
                return Err("empty answer".into());
            }
            Ok(got)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.node.log_tail(25)));
    assert_eq!(echoed, b"9876543210", "no preamble byte reached either app");

    let server_side = closed_line(&mesh, &db.netns, "source_workload=\"client\"");
    for part in [
        "reporter=\"destination\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
        "source_app=\"client\"",
        "destination_workload=\"db\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(
            server_side.contains(part),
            "{part} missing in {server_side}"
        );
    }
    let client_side = closed_line(&mesh, &client.netns, "destination_workload=\"db\"");
    for part in [
        "reporter=\"source\"",
        "source_workload=\"client\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/db\"",
        "destination_service=\"db.default.svc.cluster.local\"",
    ] {
        assert!(
            client_side.contains(part),
            "{part} missing in {client_side}"
        );
    }
}
