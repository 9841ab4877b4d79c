//! Explicit mode (docs/xds.md, "Explicit mode"): no capture, the proxy binds
//! the `explicitOutbound` listener where meshd says (a loopback port of the
//! workload's own) and routes plain HTTP by the request's authority, whether
//! the app sends it in the request line (absolute form, what an HTTP client
//! does with `HTTP_PROXY`) or in `Host` (origin form).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proxy::runtime::Shared;
use mesh_proxy::xds::{NodeIdentity, XdsClient, XdsClientConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend answering `<name> <path> host=<host>`.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("{name} {} host={host}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A free loopback port (bound, read, released: the proxy binds it next).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The listener meshd emits for an explicit-mode node (no original dst).
fn explicit_outbound(bind: SocketAddr) -> xl::Listener {
    xl::Listener {
        name: "explicitOutbound".into(),
        address: Some(sock(bind)),
        traffic_direction: xc::TrafficDirection::Outbound as i32,
        filter_chains: vec![xl::FilterChain {
            name: "explicitOutbound".into(),
            filters: vec![hcm_filter("explicit")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Sends one raw HTTP/1.1 request and returns the status line and body.
async fn raw(proxy: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// Waits (with a deadline) until the proxy accepts on `addr`.
async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn explicit_proxy_routes_absolute_form_and_host_header_requests_by_authority() {
    let (reviews, ratings) = (backend("reviews").await, backend("ratings").await);
    let mut ads = FakeAds::start().await;
    let node = NodeIdentity {
        interception_mode: "NONE".into(),
        outbound_port: Some(18080),
        ..Default::default()
    };
    let mut cfg = XdsClientConfig::new(ads.url(), node);
    cfg.initial_backoff = Duration::from_millis(20);
    let (client, rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    let shared = Shared::new(rx.clone());
    // No port override: the listener binds where the config says.
    tokio::spawn(mesh_proxy::listener::run(shared.clone(), BTreeMap::new()));

    // The node (sent on the stream's first request) says explicit mode.
    let mut node = None;
    ads.expect_delta("LDS subscribe", |r| {
        if node.is_none() {
            node = r.node.clone();
        }
        r.type_url == LDS()
    })
    .await;
    let md = node
        .and_then(|n| n.metadata)
        .map(|m| m.fields)
        .unwrap_or_default();
    assert!(md.contains_key("MESH_OUTBOUND_PORT"), "{md:?}");

    let proxy = free_port();
    ads.push_delta(
        &CDS(),
        "c1",
        vec![
            (
                "outbound|9080||reviews.default.svc.cluster.local".into(),
                any(&static_cluster(
                    "outbound|9080||reviews.default.svc.cluster.local",
                    &[reviews],
                )),
            ),
            (
                "outbound|9080||ratings.default.svc.cluster.local".into(),
                any(&static_cluster(
                    "outbound|9080||ratings.default.svc.cluster.local",
                    &[ratings],
                )),
            ),
        ],
        vec![],
    );
    ads.push_delta(
        &LDS(),
        "l1",
        vec![("explicitOutbound".into(), any(&explicit_outbound(proxy)))],
        vec![],
    );
    ads.expect_delta("RDS subscribe", |r| {
        r.type_url == RDS() && r.resource_names_subscribe.iter().any(|n| n == "explicit")
    })
    .await;
    let mut table = route_table(
        "explicit",
        &[
            "reviews.default.svc.cluster.local",
            "reviews",
            "reviews:9080",
        ],
        vec![route(
            "/",
            "outbound|9080||reviews.default.svc.cluster.local",
        )],
    );
    table.virtual_hosts.extend(
        route_table(
            "explicit",
            &["ratings", "ratings:9080"],
            vec![route(
                "/",
                "outbound|9080||ratings.default.svc.cluster.local",
            )],
        )
        .virtual_hosts,
    );
    ads.push_delta(&RDS(), "r1", vec![("explicit".into(), any(&table))], vec![]);
    let mut w = rx.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|c| c.routes.contains_key("explicit")),
    )
    .await
    .expect("config applied")
    .unwrap();
    wait_listening(proxy).await;

    // Absolute form: the request line's authority wins over a stray Host.
    let (status, body) = raw(
        proxy,
        "GET http://reviews:9080/books HTTP/1.1\r\nHost: ratings:9080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status} {body}");
    assert_eq!(body, "reviews /books host=reviews:9080");

    // Origin form: routed by Host.
    let (status, body) = raw(
        proxy,
        "GET /stars HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status} {body}");
    assert_eq!(body, "ratings /stars host=ratings");

    // A host meshd knows nothing about gets a 404, not a passthrough.
    let (status, _) = raw(
        proxy,
        "GET http://elsewhere.example/ HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 404 "), "{status}");
}
