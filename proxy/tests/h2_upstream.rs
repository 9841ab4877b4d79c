//! HTTP/2 upstreams on loopback (issues 5 and 6): a client sidecar whose
//! cluster speaks h2 over mTLS to a server sidecar, which answers the app
//! in HTTP/1.1; the h2 pool's multiplexing and rotation; and the
//! `max_requests` / `max_pending_requests` breakers on h2 clusters.

mod local;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use local::{metric, wait_until};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Shared, WorkloadInfo};
use mesh_proxy::tls::Svid;
use support::{
    TestCa, any, chain, common_tls, h2_cluster, hcm_filter, inbound_listener, listener, mtls_chain,
    proxy_config, route, route_table, static_cluster,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// `cluster` speaks h2 (as meshd emits for `h2UpgradePolicy: UPGRADE`),
/// with these common HTTP options.
/// Istio-mutual origination toward `san`, offering h2 as meshd does.
fn mtls(mut cluster: xcl::Cluster, san: &str) -> xcl::Cluster {
    cluster.transport_socket = Some(xc::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(xc::transport_socket::ConfigType::TypedConfig(any(
            &xt::UpstreamTlsContext {
                common_tls_context: Some(common_tls(
                    Some(san),
                    &["istio-peer-exchange", "istio", "h2"],
                )),
                sni: "outbound_.9080_._.reviews.default.svc.cluster.local".into(),
                ..Default::default()
            },
        ))),
    });
    cluster
}

fn breakers(max_requests: Option<u32>, max_pending: Option<u32>) -> Option<xcl::CircuitBreakers> {
    Some(xcl::CircuitBreakers {
        thresholds: vec![xcl::circuit_breakers::Thresholds {
            max_requests: max_requests.map(|value| wkt::UInt32Value { value }),
            max_pending_requests: max_pending.map(|value| wkt::UInt32Value { value }),
            ..Default::default()
        }],
        per_host_thresholds: vec![],
    })
}

/// Starts a proxy serving `config`'s listener `name` on `l`.
fn serve(
    l: TcpListener,
    name: &str,
    config: ProxyConfig,
    svid: watch::Receiver<Option<Arc<Svid>>>,
    principal: &str,
) -> Arc<Shared> {
    let (tx, rx) = watch::channel(Arc::new(config));
    // The config never changes: the receiver keeps the value.
    drop(tx);
    let workload = WorkloadInfo {
        workload: name.into(),
        principal: principal.into(),
    };
    let shared = Shared::with_svid(rx, workload, svid);
    tokio::spawn(mesh_proxy::listener::serve(l, name.into(), shared.clone()));
    shared
}

/// What the app behind the server sidecar saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: http::Version,
    host: String,
    xfcc: String,
}

/// An HTTP/1.1-only app recording each request.
async fn http1_app() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    log.lock().unwrap().push(Seen {
                        version: req.version(),
                        host: header("host"),
                        xfcc: header("x-forwarded-client-cert"),
                    });
                    let body = format!("app {}", req.uri().path());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A plain h2 backend counting connections and requests; each request
/// waits for a permit of `gate` (closed gate: answer at once).
#[derive(Clone)]
struct H2Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl H2Backend {
    async fn start(gated: bool) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Arc::new(Semaphore::new(0));
        if !gated {
            gate.close();
        }
        let b = H2Backend {
            addr: l.local_addr().unwrap(),
            connections: Arc::default(),
            requests: Arc::default(),
            gate,
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                me.connections.fetch_add(1, Ordering::SeqCst);
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let me = me.clone();
                        async move {
                            me.requests.fetch_add(1, Ordering::SeqCst);
                            if let Ok(permit) = me.gate.acquire().await {
                                permit.forget();
                            }
                            let body = format!("{:?} {}", req.version(), req.uri().path());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        b
    }
}

/// GET through a proxy over HTTP/1.1: status, body, response flags.
async fn get(proxy: SocketAddr, path: impl Into<String>) -> (u16, String, String) {
    let path = path.into();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = hyper::Request::get(format!("http://{proxy}{path}"))
        .header("host", "reviews:9080")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let flags = resp
        .headers()
        .get("x-mesh-response-flags")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), flags)
}

/// The log lines of this test binary. A global subscriber: one set per
/// thread would miss callsites whose interest another test thread (without
/// a subscriber) cached as "never".
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        logs
    })
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn access_lines(&self, cluster: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| {
                l.contains("access_log") && l.contains(&format!("upstream_cluster={cluster}"))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// A client sidecar (plain HTTP listener, cluster `to-reviews`: h2 over
/// mTLS) and a server sidecar (strict mTLS inbound, HTTP/1.1 to the app).
struct TwoSidecars {
    client: SocketAddr,
    client_shared: Arc<Shared>,
    server: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn two_sidecars() -> TwoSidecars {
    mesh_proxy::install_crypto_provider();
    let ca = TestCa::new();
    let (app, seen) = http1_app().await;
    let server_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server_l.local_addr().unwrap();
    // Istio's inbound chain: h2 and http/1.1.
    let inbound = mtls_chain("inbound|9080||", hcm_filter("inbound"), &["h2", "http/1.1"]);
    let in_l = inbound_listener(server, vec![inbound]);
    let server_cfg = proxy_config(
        vec![in_l],
        vec![static_cluster("inbound|9080||", &[app])],
        vec![route_table(
            "inbound",
            &["*"],
            vec![route("/", "inbound|9080||")],
        )],
    );
    serve(
        server_l,
        "virtualInbound",
        server_cfg,
        ca.svid_rx(SERVER_ID),
        SERVER_ID,
    );
    let client_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = client_l.local_addr().unwrap();
    let out_l = listener(
        "out",
        client,
        false,
        vec![chain("out", None, hcm_filter("out"))],
        None,
    );
    let client_cfg = proxy_config(
        vec![out_l],
        vec![mtls(
            h2_cluster(static_cluster("to-reviews", &[server]), None),
            SERVER_ID,
        )],
        vec![route_table("out", &["*"], vec![route("/", "to-reviews")])],
    );
    let client_shared = serve(
        client_l,
        "out",
        client_cfg,
        ca.svid_rx(CLIENT_ID),
        CLIENT_ID,
    );
    TwoSidecars {
        client,
        client_shared,
        server,
        seen,
    }
}

#[tokio::test]
async fn client_sidecar_speaks_h2_over_mtls_and_the_app_gets_http1_with_the_caller_identity() {
    let logs = logs();
    let env = two_sidecars().await;
    let all =
        futures_util::future::join_all((0..8).map(|i| get(env.client, format!("/r{i}")))).await;
    for (i, (status, body, _)) in all.iter().enumerate() {
        assert_eq!(
            (*status, body.as_str()),
            (200, format!("app /r{i}").as_str())
        );
    }
    assert_eq!(
        env.client_shared
            .upstreams
            .h2
            .connections("to-reviews", env.server),
        1,
        "eight concurrent requests multiplexed on one h2 connection"
    );
    let seen = env.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8);
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_11, "the app speaks HTTP/1.1");
        assert_eq!(s.host, "reviews:9080", ":authority became Host again");
        assert_eq!(
            s.xfcc,
            format!("By={SERVER_ID};URI={CLIENT_ID}"),
            "the caller's SPIFFE ID reaches the app"
        );
    }
    let server_side = logs.access_lines("inbound|9080||");
    assert_eq!(server_side.len(), 8, "{server_side:?}");
    assert!(
        server_side.iter().all(|l| l.contains("protocol=HTTP/2.0")),
        "the server sidecar received h2 from its peer: {server_side:?}"
    );
    let client_side = logs.access_lines("to-reviews");
    assert!(
        client_side.iter().all(|l| l.contains("protocol=HTTP/1.1")),
        "{client_side:?}"
    );
}

/// A proxy with one plain HTTP listener routing everything to `cluster`.
async fn proxy_to(cluster: xcl::Cluster) -> (SocketAddr, Arc<Shared>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name = cluster.name.clone();
    let cfg = proxy_config(
        vec![listener(
            "http",
            addr,
            false,
            vec![chain("http", None, hcm_filter("9080"))],
            None,
        )],
        vec![cluster],
        vec![route_table("9080", &["*"], vec![route("/", &name)])],
    );
    let shared = serve(l, "http", cfg, mesh_proxy::tls::no_svid(), "unknown");
    (addr, shared)
}

#[tokio::test]
async fn h2_connections_rotate_after_max_requests_per_connection() {
    let b = H2Backend::start(false).await;
    let common = xc::HttpProtocolOptions {
        max_requests_per_connection: Some(wkt::UInt32Value { value: 2 }),
        ..Default::default()
    };
    let (proxy, _shared) =
        proxy_to(h2_cluster(static_cluster("h2", &[b.addr]), Some(common))).await;
    for i in 0..5 {
        let (status, body, _) = get(proxy, format!("/{i}")).await;
        assert_eq!((status, body), (200, format!("HTTP/2.0 /{i}")));
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        3,
        "two requests per connection: 2 + 2 + 1"
    );
}

#[tokio::test]
async fn h2_requests_over_max_requests_get_exactly_one_uo_at_once() {
    let b = H2Backend::start(true).await;
    let mut c = h2_cluster(static_cluster("h2", &[b.addr]), None);
    c.circuit_breakers = breakers(Some(3), None);
    let (proxy, shared) = proxy_to(c).await;
    let mut calls: Vec<_> = (0..4)
        .map(|i| tokio::spawn(get(proxy, format!("/{i}"))))
        .collect();
    // The fourth is refused while the three are held at the backend.
    wait_until("three requests at the backend and one answered", || {
        b.requests.load(Ordering::SeqCst) == 3 && calls.iter().any(|c| c.is_finished())
    })
    .await;
    let refused = calls.iter().position(|c| c.is_finished()).unwrap();
    let (status, _, flags) = calls.remove(refused).await.unwrap();
    assert_eq!((status, flags.as_str()), (503, "UO"));
    assert!(calls.iter().all(|c| !c.is_finished()), "exactly one UO");
    let pending = calls;
    b.gate.add_permits(3);
    for c in pending {
        assert_eq!(c.await.unwrap().0, 200);
    }
    assert_eq!(
        b.requests.load(Ordering::SeqCst),
        3,
        "the backend never saw more"
    );
    assert_eq!(b.connections.load(Ordering::SeqCst), 1, "multiplexed");
    let m = shared.metrics.encode();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_upstream_rq_pending_overflow_total{cluster_name=\"h2\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn h2_requests_waiting_for_the_connection_past_max_pending_get_uo_at_once() {
    mesh_proxy::install_crypto_provider();
    let ca = TestCa::new();
    // A peer that accepts TCP and never answers the TLS handshake: the h2
    // connection stays in the making.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let mut c = mtls(
        h2_cluster(static_cluster("slow", &[silent_addr]), None),
        SERVER_ID,
    );
    c.circuit_breakers = breakers(None, Some(1));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = l.local_addr().unwrap();
    let cfg = proxy_config(
        vec![listener(
            "http",
            proxy,
            false,
            vec![chain("http", None, hcm_filter("9080"))],
            None,
        )],
        vec![c],
        vec![route_table("9080", &["*"], vec![route("/", "slow")])],
    );
    let shared = serve(l, "http", cfg, ca.svid_rx(CLIENT_ID), CLIENT_ID);
    let pending = shared.upstreams.h2.pending("slow");
    let first = tokio::spawn(get(proxy, "/first"));
    wait_until("the first request waiting for the connection", || {
        pending.count() == 1
    })
    .await;
    let started = Instant::now();
    let (status, _, flags) = get(proxy, "/second").await;
    assert_eq!((status, flags.as_str()), (503, "UO"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(held.lock().unwrap().len(), 1, "one connect for both");
    first.abort();
}

/// A plain h2 backend that answers one request per connection, then sends
/// GOAWAY (graceful shutdown); counts connections.
async fn goaway_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel::<()>();
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let _ = answered_tx.send(());
                    let body = req.uri().path().to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = answered.recv() => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_new_h2_connection_replaces_one_the_upstream_closed_with_goaway() {
    let (backend, connections) = goaway_backend().await;
    let (proxy, shared) = proxy_to(h2_cluster(static_cluster("h2", &[backend]), None)).await;
    for i in 0..3 {
        let (status, body, _) = get(proxy, format!("/{i}")).await;
        assert_eq!((status, body), (200, format!("/{i}")));
        wait_until("the pool sees the GOAWAY", || {
            shared.upstreams.h2.connections("h2", backend) == 0
        })
        .await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3, "one per request");
}
