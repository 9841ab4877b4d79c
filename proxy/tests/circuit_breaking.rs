//! Connection circuit breaking on loopback: HTTP/1.1 requests beyond
//! `max_connections` wait, up to `max_pending_requests` of them; the next
//! is refused at once with `503 UO`.

mod local;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use local::{Backend, Proxy, Reply, metric, wait_until};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use support::{route, static_cluster};

#[tokio::test]
async fn requests_over_max_connections_wait_and_over_max_pending_get_uo_at_once() {
    let b = Backend::start(|_| Reply::Delay(Duration::from_millis(400))).await;
    let mut c = static_cluster("pool", &[b.addr]);
    c.circuit_breakers = Some(xcl::CircuitBreakers {
        thresholds: vec![xcl::circuit_breakers::Thresholds {
            max_connections: Some(wkt::UInt32Value { value: 1 }),
            max_pending_requests: Some(wkt::UInt32Value { value: 1 }),
            ..Default::default()
        }],
        per_host_thresholds: vec![],
    });
    let p = Proxy::start(vec![c], vec![route("/", "pool")]).await;
    let lb = p.shared.balancers.cluster("pool");
    let first = tokio::spawn(p.send("GET", "/", &[], Bytes::new()));
    wait_until("the first request at the backend", || {
        lb.connections.counts() == (1, 0)
    })
    .await;
    let second = tokio::spawn(p.send("GET", "/", &[], Bytes::new()));
    wait_until("the second request pending", || {
        lb.connections.counts() == (1, 1)
    })
    .await;
    let started = Instant::now();
    let (s, _, flags) = p.get("/").await;
    assert_eq!((s, flags.as_str()), (503, "UO"));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "refused without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    assert_eq!(b.requests(), 2, "the backend never saw more than the limit");
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_pending_overflow_total{cluster_name=\"pool\"}"
        ),
        1.0,
        "{m}"
    );
    wait_until("slots free", || lb.connections.counts() == (0, 0)).await;
}
