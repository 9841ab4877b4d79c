//! Retries on loopback: replayed bodies, the replay limit, Envoy's
//! `retry_on` conditions (reset, gRPC status), `max_retries` and the retry
//! budget, and the retry counter.

mod local;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use local::{Backend, Proxy, Reply, metric, wait_until};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::envoy::r#type::v3 as xt;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use support::{route, static_cluster};

fn with_retry(mut r: xr::Route, retry_on: &str, n: u32) -> xr::Route {
    let Some(xr::route::Action::Route(ra)) = &mut r.action else {
        unreachable!()
    };
    ra.retry_policy = Some(xr::RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: Some(wkt::UInt32Value { value: n }),
        ..Default::default()
    });
    r
}

fn thresholds(c: &mut xcl::Cluster, t: xcl::circuit_breakers::Thresholds) {
    c.circuit_breakers = Some(xcl::CircuitBreakers {
        thresholds: vec![t],
        per_host_thresholds: vec![],
    });
}

/// Fails the first `n` requests with `status`, then answers 200.
fn fails_first(n: usize, status: u16) -> impl Fn(usize) -> Reply {
    move |i| {
        if i < n {
            Reply::Status(status, vec![])
        } else {
            Reply::Status(200, vec![])
        }
    }
}

#[tokio::test]
async fn a_small_post_body_is_replayed_on_every_try_and_retries_are_counted() {
    let b = Backend::start(fails_first(2, 503)).await;
    let p = Proxy::start(
        vec![static_cluster("flaky", &[b.addr])],
        vec![with_retry(route("/", "flaky"), "5xx", 3)],
    )
    .await;
    let body = Bytes::from(vec![b'x'; 10_000]);
    let (s, _, _) = p.send("POST", "/", &[], body.clone()).await;
    assert_eq!(s, 200);
    let seen = b.bodies.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|b| *b == body),
        "every try carries the body"
    );
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_retry_total{cluster_name=\"flaky\"}"
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_body_over_the_replay_limit_streams_through_with_one_try() {
    let b = Backend::start(fails_first(1, 503)).await;
    let p = Proxy::start(
        vec![static_cluster("flaky", &[b.addr])],
        vec![with_retry(route("/", "flaky"), "5xx", 3)],
    )
    .await;
    let body = Bytes::from(vec![b'y'; 100 * 1024]);
    let (s, _, _) = p.send("POST", "/", &[], body.clone()).await;
    assert_eq!(s, 503, "not replayable: the first answer stands");
    assert_eq!(b.requests(), 1);
    assert_eq!(b.bodies.lock().unwrap()[0], body, "the whole body arrived");
}

#[tokio::test]
async fn reset_before_headers_is_retried_under_reset() {
    let b = Backend::start(|i| {
        if i == 0 {
            Reply::Reset
        } else {
            Reply::Status(200, vec![])
        }
    })
    .await;
    let p = Proxy::start(
        vec![static_cluster("resets", &[b.addr])],
        vec![
            with_retry(route("/retry", "resets"), "reset", 1),
            route("/", "resets"),
        ],
    )
    .await;
    assert_eq!(p.get("/retry").await.0, 200);
    assert_eq!(b.requests(), 2);
    // Without a policy the reset reaches the client as 503 UC.
    let b2 = Backend::start(|_| Reply::Reset).await;
    let p2 = Proxy::start(
        vec![static_cluster("resets", &[b2.addr])],
        vec![route("/", "resets")],
    )
    .await;
    let (s, _, flags) = p2.get("/").await;
    assert_eq!((s, flags.as_str()), (503, "UC"));
}

#[tokio::test]
async fn grpc_status_unavailable_is_retried_and_ok_is_not() {
    let b = Backend::start(|i| {
        let code = if i == 0 { "14" } else { "0" };
        Reply::Status(200, vec![("grpc-status", code.to_string())])
    })
    .await;
    let p = Proxy::start(
        vec![static_cluster("grpc", &[b.addr])],
        vec![with_retry(route("/", "grpc"), "unavailable,cancelled", 3)],
    )
    .await;
    assert_eq!(p.get("/").await.0, 200);
    assert_eq!(
        b.requests(),
        2,
        "one retry after UNAVAILABLE, none after OK"
    );
}

#[tokio::test]
async fn max_retries_zero_lets_no_retry_through_and_counts_the_overflow() {
    let b = Backend::start(fails_first(1, 503)).await;
    let mut c = static_cluster("flaky", &[b.addr]);
    thresholds(
        &mut c,
        xcl::circuit_breakers::Thresholds {
            max_retries: Some(wkt::UInt32Value { value: 0 }),
            ..Default::default()
        },
    );
    let p = Proxy::start(vec![c], vec![with_retry(route("/", "flaky"), "5xx", 3)]).await;
    assert_eq!(p.get("/").await.0, 503);
    assert_eq!(b.requests(), 1);
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_retry_overflow_total{cluster_name=\"flaky\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn retry_budget_caps_concurrent_retries_at_min_concurrency() {
    // Even-numbered tries fail at once, odd ones (the retries) take 300 ms:
    // each request holds one retry in flight for a while.
    let b = Backend::start(|n| {
        if n % 2 == 0 {
            Reply::Status(503, vec![])
        } else {
            Reply::Delay(Duration::from_millis(300))
        }
    })
    .await;
    let mut c = static_cluster("budget", &[b.addr]);
    thresholds(
        &mut c,
        xcl::circuit_breakers::Thresholds {
            retry_budget: Some(xcl::circuit_breakers::thresholds::RetryBudget {
                budget_percent: Some(xt::Percent { value: 0.0 }),
                min_retry_concurrency: Some(wkt::UInt32Value { value: 2 }),
                budget_interval: None,
            }),
            ..Default::default()
        },
    );
    let p = Proxy::start(vec![c], vec![with_retry(route("/", "budget"), "5xx", 1)]).await;
    let mut held = Vec::new();
    for in_flight in 1..=2 {
        held.push(tokio::spawn(p.send("GET", "/", &[], Bytes::new())));
        wait_until("retry in flight", || {
            b.active.load(Ordering::SeqCst) == in_flight
        })
        .await;
    }
    // Two retries in flight: the third request's retry overflows.
    let (s, _, _) = p.get("/").await;
    assert_eq!(s, 503);
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_retry_total{cluster_name=\"budget\"}"
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_retry_overflow_total{cluster_name=\"budget\"}"
        ),
        1.0,
        "{m}"
    );
    // The slots are free again: a retry goes through.
    assert_eq!(p.get("/").await.0, 200);
}
