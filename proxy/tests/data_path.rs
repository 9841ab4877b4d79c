//! The real data path on loopback: a fake ADS server configures the proxy,
//! real hyper backends answer, requests go through the proxy.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::Shared;
use mesh_proxy::xds::{NodeIdentity, XdsClient, XdsClientConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A backend answering `<name> <path> host=<host> env=<x-env>`; `/slow`
/// waits 300 ms first.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let body = format!(
                            "{name} {} host={} env={}",
                            req.uri().path(),
                            h("host"),
                            h("x-env")
                        );
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

/// Answers `Upgrade: echo` with 101, then echoes bytes on the upgraded connection.
async fn upgrade_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 4];
                            io.read_exact(&mut buf).await.unwrap();
                            io.write_all(&buf).await.unwrap();
                        });
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                        r.headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Records the Host header of every request it gets.
async fn recorder(seen: Arc<std::sync::Mutex<Vec<String>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        seen.lock()
                            .unwrap()
                            .push(format!("{} {host}", req.uri().path()));
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
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

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Reads to EOF, so it only answers after the client's half-close.
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(b"echo:").await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
        }
    });
    addr
}

/// Answers 503 to every other request, starting with the first.
async fn flaky() -> SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                                "flaky try {n}"
                            ))));
                            if n.is_multiple_of(2) {
                                *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
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

/// `/slow-limited` → `/slow` on cluster `limited` (max_requests 1).
fn slow_limited() -> xr::Route {
    let mut r = route("/slow-limited", "limited");
    let Some(xr::route::Action::Route(ra)) = &mut r.action else {
        unreachable!()
    };
    ra.prefix_rewrite = "/slow".into();
    r
}

fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn header_route(prefix: &str, header: &str, value: &str, cluster: &str) -> xr::Route {
    use mesh_proto::envoy::pb::envoy::r#type::matcher::v3 as xm;
    let mut r = route(prefix, cluster);
    r.r#match.as_mut().unwrap().headers.push(xr::HeaderMatcher {
        name: header.into(),
        header_match_specifier: Some(xr::header_matcher::HeaderMatchSpecifier::StringMatch(
            xm::StringMatcher {
                match_pattern: Some(xm::string_matcher::MatchPattern::Exact(value.into())),
                ignore_case: false,
            },
        )),
        ..Default::default()
    });
    r
}

fn routes(default_cluster: &str) -> xr::RouteConfiguration {
    let mut direct = route("/direct", "unused");
    direct.action = Some(xr::route::Action::DirectResponse(
        xr::DirectResponseAction {
            status: 418,
            body: Some(xc::DataSource {
                specifier: Some(xc::data_source::Specifier::InlineString("teapot".into())),
                ..Default::default()
            }),
            body_format: None,
        },
    ));
    let mut split = route("/split", "unused");
    let Some(xr::route::Action::Route(ra)) = &mut split.action else {
        unreachable!()
    };
    ra.cluster_specifier = Some(xr::route_action::ClusterSpecifier::WeightedClusters(
        xr::WeightedCluster {
            clusters: ["v1", "v2"]
                .iter()
                .map(|c| xr::weighted_cluster::ClusterWeight {
                    name: (*c).into(),
                    weight: Some(wkt::UInt32Value { value: 50 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    ));
    let mut rewrite = route("/rewrite", "v1");
    let Some(xr::route::Action::Route(ra)) = &mut rewrite.action else {
        unreachable!()
    };
    ra.prefix_rewrite = "/new".into();
    rewrite.request_headers_to_add.push(xc::HeaderValueOption {
        header: Some(xc::HeaderValue {
            key: "x-env".into(),
            value: "canary".into(),
            raw_value: vec![],
        }),
        ..Default::default()
    });
    route_table(
        "9080",
        &["reviews", "reviews:9080"],
        vec![
            direct,
            header_route("/", "end-user", "jason", "v2"),
            split,
            rewrite,
            route("/nohost", "empty"),
            route("/down", "down"),
            route("/nocluster", "missing"),
            with_retry(route("/retry-flaky", "flaky-a"), "5xx", 2),
            slow_limited(),
            route("/ws", "upgrade"),
            route("/outlier", "outlier"),
            with_mirror(route("/mirror", "v1"), "shadow"),
            route("/flaky-noretry", "flaky-b"),
            with_retry(route("/retry-connect", "half-down"), "connect-failure", 1),
            route("/", default_cluster),
        ],
    )
}

struct Env {
    shared: Arc<Shared>,
    mirrored: Arc<std::sync::Mutex<Vec<String>>>,
    ads: FakeAds,
    rx: watch::Receiver<Arc<ProxyConfig>>,
    http: SocketAddr,
    tcp: SocketAddr,
}

async fn setup() -> Env {
    let (v1, v2, echo) = (
        backend("v1").await,
        backend("v2").await,
        echo_server().await,
    );
    let mirrored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shadow = recorder(mirrored.clone()).await;
    let mut ads = FakeAds::start().await;
    let mut cfg = XdsClientConfig::new(ads.url(), NodeIdentity::default());
    cfg.initial_backoff = Duration::from_millis(20);
    let (client, rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    let shared = Shared::new(rx.clone());
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, tcp) = (http_l.local_addr().unwrap(), tcp_l.local_addr().unwrap());
    tokio::spawn(mesh_proxy::listener::serve(
        http_l,
        "http".into(),
        shared.clone(),
    ));
    tokio::spawn(mesh_proxy::listener::serve(
        tcp_l,
        "tcp".into(),
        shared.clone(),
    ));

    ads.expect_delta("LDS subscribe", |r| r.type_url == LDS())
        .await;
    let clusters = vec![
        (
            "v1".to_owned(),
            any(&eds_cluster("v1", LbPolicy::RoundRobin)),
        ),
        (
            "v2".to_owned(),
            any(&eds_cluster("v2", LbPolicy::LeastRequest)),
        ),
        (
            "empty".to_owned(),
            any(&eds_cluster("empty", LbPolicy::Random)),
        ),
        (
            "down".to_owned(),
            any(&static_cluster("down", &[closed_port()])),
        ),
        ("echo".to_owned(), any(&static_cluster("echo", &[echo]))),
        (
            "outlier".to_owned(),
            any(&{
                let mut c = static_cluster("outlier", &[closed_port(), v1]);
                c.outlier_detection = Some(
                    mesh_proto::envoy::pb::envoy::config::cluster::v3::OutlierDetection {
                        consecutive_5xx: Some(wkt::UInt32Value { value: 2 }),
                        max_ejection_percent: Some(wkt::UInt32Value { value: 50 }),
                        ..Default::default()
                    },
                );
                c
            }),
        ),
        (
            "shadow".to_owned(),
            any(&static_cluster("shadow", &[shadow])),
        ),
        (
            "upgrade".to_owned(),
            any(&static_cluster("upgrade", &[upgrade_backend().await])),
        ),
        (
            "limited".to_owned(),
            any(&{
                let mut c = static_cluster("limited", &[v1]);
                c.circuit_breakers = Some(mesh_proto::envoy::pb::envoy::config::cluster::v3::CircuitBreakers {
                thresholds: vec![mesh_proto::envoy::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds {
                    max_requests: Some(wkt::UInt32Value { value: 1 }),
                    ..Default::default()
                }],
                per_host_thresholds: vec![],
            });
                c
            }),
        ),
        (
            "flaky-a".to_owned(),
            any(&static_cluster("flaky-a", &[flaky().await])),
        ),
        (
            "flaky-b".to_owned(),
            any(&static_cluster("flaky-b", &[flaky().await])),
        ),
        (
            "half-down".to_owned(),
            any(&static_cluster("half-down", &[closed_port(), v1])),
        ),
    ];
    ads.push_delta(&CDS(), "c1", clusters, vec![]);
    let listeners = vec![
        (
            "http".to_owned(),
            any(&listener(
                "http",
                http,
                false,
                vec![chain(
                    "outbound|9080||reviews",
                    Some(http),
                    hcm_filter("9080"),
                )],
                None,
            )),
        ),
        (
            "tcp".to_owned(),
            any(&listener(
                "tcp",
                tcp,
                false,
                vec![],
                Some(chain("echo", None, tcp_filter("echo"))),
            )),
        ),
    ];
    ads.push_delta(&LDS(), "l1", listeners, vec![]);
    ads.expect_delta("RDS subscribe", |r| {
        r.type_url == RDS() && !r.resource_names_subscribe.is_empty()
    })
    .await;
    ads.push_delta(
        &EDS(),
        "e1",
        vec![
            ("v1".into(), any(&cla("v1", &[(v1, 1, 1)]))),
            ("v2".into(), any(&cla("v2", &[(v2, 1, 1)]))),
            // UNHEALTHY only: no host may be picked.
            ("empty".into(), any(&cla("empty", &[(v1, 2, 1)]))),
        ],
        vec![],
    );
    ads.push_delta(
        &RDS(),
        "r1",
        vec![("9080".into(), any(&routes("v1")))],
        vec![],
    );
    let mut w = rx.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|c| c.routes.contains_key("9080") && c.endpoints.len() == 3),
    )
    .await
    .expect("config applied")
    .unwrap();
    Env {
        shared,
        mirrored,
        ads,
        rx,
        http,
        tcp,
    }
}

async fn get(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::get(format!("http://{proxy}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let flags = resp
        .headers()
        .get("x-mesh-response-flags")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, body, flags)
}

#[tokio::test]
async fn http_routes_by_host_path_and_header_with_rewrite_and_direct_response() {
    let env = setup().await;
    let (s, body, _) = get(env.http, "reviews:9080", "/products", &[]).await;
    assert_eq!(
        (s, body.as_str()),
        (200, "v1 /products host=reviews:9080 env=")
    );
    let (_, body, _) = get(env.http, "reviews", "/products", &[("end-user", "jason")]).await;
    assert!(body.starts_with("v2 /products"), "{body}");
    let (_, body, _) = get(env.http, "reviews", "/rewrite/x", &[]).await;
    assert_eq!(body, "v1 /new/x host=reviews env=canary");
    let (s, body, _) = get(env.http, "reviews", "/direct", &[]).await;
    assert_eq!((s, body.as_str()), (418, "teapot"));
}

#[tokio::test]
async fn weighted_clusters_split_traffic() {
    let env = setup().await;
    let mut v1 = 0;
    for _ in 0..60 {
        let (_, body, _) = get(env.http, "reviews", "/split", &[]).await;
        if body.starts_with("v1") {
            v1 += 1;
        }
    }
    assert!((10..=50).contains(&v1), "v1 got {v1} of 60");
}

#[tokio::test]
async fn generated_responses_carry_envoy_flags_and_readable_bodies() {
    let env = setup().await;
    let (s, body, flags) = get(env.http, "unknown.example", "/", &[]).await;
    assert_eq!((s, flags.as_str()), (404, "NR"));
    assert!(body.contains("no route"), "{body}");
    let (s, body, flags) = get(env.http, "reviews", "/nohost", &[]).await;
    assert_eq!(
        (s, flags.as_str(), body.as_str()),
        (503, "UH", "no healthy upstream (UH)\n")
    );
    let (s, body, flags) = get(env.http, "reviews", "/down", &[]).await;
    assert_eq!((s, flags.as_str()), (503, "UF"));
    assert!(body.contains("connection failure"), "{body}");
    let (s, _, flags) = get(env.http, "reviews", "/nocluster", &[]).await;
    assert_eq!((s, flags.as_str()), (503, "NC"));
}

#[tokio::test]
async fn tcp_proxy_forwards_both_ways_with_half_close() {
    let env = setup().await;
    let mut s = tokio::net::TcpStream::connect(env.tcp).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    // Half-close: the echo server answers only after it sees our EOF.
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"echo:hello");
}

#[tokio::test]
async fn route_change_applies_to_new_requests_without_dropping_in_flight_ones() {
    let env = setup().await;
    let slow = tokio::spawn(get(env.http, "reviews", "/slow", &[]));
    // Wait until the slow request is routed (to v1, with the old routes):
    // it is in flight on cluster v1.
    let v1 = env.shared.balancers.cluster("v1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while v1.admit(Some(1)).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request never reached v1"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.ads.push_delta(
        &RDS(),
        "r2",
        vec![("9080".into(), any(&routes("v2")))],
        vec![],
    );
    let mut w = env.rx.clone();
    w.wait_for(|c| c.versions[&RDS()]["9080"] == "r2")
        .await
        .unwrap();
    let (_, body, _) = get(env.http, "reviews", "/after", &[]).await;
    assert!(body.starts_with("v2 /after"), "{body}");
    let (s, body, _) = slow.await.unwrap();
    assert_eq!((s, body.starts_with("v1 /slow")), (200, true), "{body}");
}

async fn serve_role(shared: &Arc<Shared>, role: mesh_proxy::admin::Role) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(mesh_proxy::admin::serve(l, role, shared.clone()));
    addr
}

#[tokio::test]
async fn admin_health_and_prometheus_report_config_endpoints_and_istio_metrics() {
    use mesh_proxy::admin::Role;
    let env = setup().await;
    get(env.http, "reviews", "/products", &[]).await;
    get(env.http, "reviews", "/nohost", &[]).await;
    let admin = serve_role(&env.shared, Role::Admin).await;
    let health = serve_role(&env.shared, Role::Health).await;
    let prom = serve_role(&env.shared, Role::Prometheus).await;

    let (s, dump, _) = get(admin, "localhost", "/config_dump?include_eds", &[]).await;
    assert_eq!(s, 200);
    let json: serde_json::Value = serde_json::from_str(&dump).unwrap();
    // Envoy's format (envoy.admin.v3.ConfigDump): see tests/admin_dump.rs.
    let cds = &json["configs"][0];
    assert!(
        cds["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cluster"]["name"] == "v1"),
        "{dump}"
    );
    assert_eq!(
        json["configs"][3]["dynamic_route_configs"][0]["version_info"],
        "r1"
    );
    let (_, clusters, _) = get(admin, "localhost", "/clusters", &[]).await;
    assert!(clusters.contains("empty::127.0.0.1:"), "{clusters}");
    assert!(
        clusters.contains("::health_flags::unhealthy::"),
        "{clusters}"
    );
    assert_eq!(get(health, "localhost", "/healthz/ready", &[]).await.0, 200);
    assert_eq!(get(health, "localhost", "/config_dump", &[]).await.0, 404);

    let (_, text, _) = get(prom, "localhost", "/stats/prometheus", &[]).await;
    assert!(
        text.contains("istio_requests_total{reporter=\"source\""),
        "{text}"
    );
    assert!(
        text.contains("response_code=\"503\",response_flags=\"UH\""),
        "{text}"
    );
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn drain_stops_accepting_new_connections() {
    let env = setup().await;
    assert_eq!(env.shared.drain(Duration::from_secs(2)).await, 0);
    // The accept loop observes the drain and drops its socket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(env.http).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections after the drain"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn retries_replay_bodiless_requests_on_the_configured_conditions() {
    let env = setup().await;
    let (s, body, _) = get(env.http, "reviews", "/retry-flaky", &[]).await;
    assert_eq!((s, body.as_str()), (200, "flaky try 1"));
    let (s, _, _) = get(env.http, "reviews", "/flaky-noretry", &[]).await;
    assert_eq!(s, 503);
    // Round robin over [closed, v1]: whichever comes first, the retry lands on v1.
    for _ in 0..4 {
        let (s, body, _) = get(env.http, "reviews", "/retry-connect", &[]).await;
        assert_eq!(s, 200, "{body}");
    }
}

#[tokio::test]
async fn circuit_breaker_rejects_requests_over_max_requests_with_uo() {
    let env = setup().await;
    let first = tokio::spawn(get(env.http, "reviews", "/slow-limited", &[]));
    // Wait until the first request holds the cluster's only slot.
    let lb = env.shared.balancers.cluster("limited");
    while lb.admit(Some(1)).is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, body, flags) = get(env.http, "reviews", "/slow-limited", &[]).await;
    assert_eq!((s, flags.as_str()), (503, "UO"), "{body}");
    assert_eq!(first.await.unwrap().0, 200);
    // The slot is free again.
    assert_eq!(get(env.http, "reviews", "/slow-limited", &[]).await.0, 200);
}

#[tokio::test]
async fn upgrade_requests_are_spliced_after_101() {
    let env = setup().await;
    let mut s = tokio::net::TcpStream::connect(env.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn failing_endpoint_is_ejected_by_outlier_detection() {
    let env = setup().await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(env.http, "reviews", "/outlier", &[]).await.0);
    }
    // Round robin hits the dead endpoint until two consecutive failures eject it.
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses[4..].iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn mirrored_requests_reach_the_shadow_cluster_with_a_shadow_host() {
    let env = setup().await;
    let (s, body, _) = get(env.http, "reviews:9080", "/mirror/x", &[]).await;
    assert_eq!((s, body.starts_with("v1 /mirror/x")), (200, true), "{body}");
    for _ in 0..100 {
        if !env.mirrored.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *env.mirrored.lock().unwrap(),
        ["/mirror/x reviews-shadow:9080"]
    );
}

#[tokio::test]
async fn drain_closes_idle_keep_alive_connections_without_waiting_for_the_timeout() {
    let env = setup().await;
    // A keep-alive connection that stays open after its request.
    let s = tokio::net::TcpStream::connect(env.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/products")
        .header("host", "reviews")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    assert_eq!(env.shared.active_connections(), 1);
    let started = std::time::Instant::now();
    assert_eq!(env.shared.drain(Duration::from_secs(5)).await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
