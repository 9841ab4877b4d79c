//! Istio's peer metadata exchange between two sidecars on loopback
//! (issue 5): a client sidecar (plain HTTP listener, cluster `to-reviews`
//! over mTLS) and a server sidecar (strict mTLS inbound, HTTP/1.1 to the
//! app). Each side's `istio_requests_total` names the other side's
//! workload, the app never sees the exchange headers, and gRPC requests
//! are labelled as such.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Shared, WorkloadInfo};
use mesh_proxy::tls::Svid;
use mesh_proxy::xds::NodeIdentity;
use support::{
    TestCa, any, chain, common_tls, h2_cluster, hcm_filter, inbound_listener, listener, mtls_chain,
    proxy_config, route, route_table, static_cluster, tcp_filter,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/reviews";

/// Istio-mutual origination toward `san` offering `alpn`.
fn mtls(mut cluster: xcl::Cluster, san: &str, alpn: &[&str]) -> xcl::Cluster {
    cluster.transport_socket = Some(xc::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(xc::transport_socket::ConfigType::TypedConfig(any(
            &xt::UpstreamTlsContext {
                common_tls_context: Some(common_tls(Some(san), alpn)),
                sni: "outbound_.9080_._.reviews.shop.svc.cluster.local".into(),
                ..Default::default()
            },
        ))),
    });
    cluster
}

/// Starts a sidecar for `node` serving `config`'s listener `name` on `l`.
fn serve(
    l: TcpListener,
    name: &str,
    config: ProxyConfig,
    svid: watch::Receiver<Option<Arc<Svid>>>,
    node: &NodeIdentity,
    principal: &str,
) -> Arc<Shared> {
    let (tx, rx) = watch::channel(Arc::new(config));
    drop(tx);
    let workload = WorkloadInfo {
        workload: node.workload_name.clone(),
        principal: principal.into(),
    };
    let shared = Shared::with_svid(rx, workload, svid);
    assert!(shared.peer_metadata.set_local(node));
    tokio::spawn(mesh_proxy::listener::serve(l, name.into(), shared.clone()));
    shared
}

fn node(ns: &str, workload: &str, labels: &[(&str, &str)]) -> NodeIdentity {
    NodeIdentity {
        namespace: ns.into(),
        workload_name: workload.into(),
        service_account: workload.split('-').next().unwrap().into(),
        cluster_id: "Kubernetes".into(),
        instance_ips: vec!["127.0.0.1".into()],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

/// Request headers the app saw whose name starts with `x-envoy-peer`.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// An HTTP/1.1 app: `/grpc` answers as a gRPC server would for
/// NOT_FOUND (trailers-only: `grpc-status: 5` in the headers); every
/// reply also carries a forged `x-envoy-peer-metadata`, which no caller
/// may see.
async fn app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    log.lock().unwrap().push(
                        req.headers()
                            .keys()
                            .map(|k| k.as_str().to_owned())
                            .filter(|k| k.starts_with("x-envoy-peer"))
                            .collect(),
                    );
                    let mut resp = hyper::Response::new(Full::new(Bytes::from("ok")));
                    resp.headers_mut()
                        .insert("x-envoy-peer-metadata", "Zm9yZ2Vk".parse().unwrap());
                    if req.uri().path() == "/grpc" {
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        resp.headers_mut()
                            .insert("grpc-status", "5".parse().unwrap());
                    }
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct TwoSidecars {
    client: SocketAddr,
    client_shared: Arc<Shared>,
    server_shared: Arc<Shared>,
    seen: Seen,
}

/// An h2 gRPC-like app: data, then `grpc-status: 0` in the trailers.
async fn h2_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: hyper::Request<_>| async {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let frames = vec![
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                            Bytes::from_static(b"\0\0\0\0\0"),
                        )),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ];
                    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                    let mut resp = hyper::Response::new(body);
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn two_sidecars() -> TwoSidecars {
    two_sidecars_for(false).await
}

/// The two sidecars; with `grpc` the hops are h2 and the app is
/// [`h2_app`].
async fn two_sidecars_for(grpc: bool) -> TwoSidecars {
    mesh_proxy::install_crypto_provider();
    let ca = TestCa::new();
    let (mut app, seen) = app().await;
    if grpc {
        app = h2_app().await;
    }
    let maybe_h2 = |c: xcl::Cluster| if grpc { h2_cluster(c, None) } else { c };
    let server_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server_l.local_addr().unwrap();
    let inbound = mtls_chain("inbound|9080||", hcm_filter("inbound"), &["h2", "http/1.1"]);
    let in_l = inbound_listener(server, vec![inbound]);
    let server_cfg = proxy_config(
        vec![in_l],
        vec![maybe_h2(static_cluster("inbound|9080||", &[app]))],
        vec![route_table(
            "inbound",
            &["*"],
            vec![route("/", "inbound|9080||")],
        )],
    );
    let server_shared = serve(
        server_l,
        "virtualInbound",
        server_cfg,
        ca.svid_rx(SERVER_ID),
        &node(
            "shop",
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
        ),
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
    let cluster = "outbound|9080||reviews.shop.svc.cluster.local";
    let client_cfg = proxy_config(
        vec![out_l],
        vec![if grpc {
            mtls(
                h2_cluster(static_cluster(cluster, &[server]), None),
                SERVER_ID,
                &["istio", "h2"],
            )
        } else {
            mtls(
                static_cluster(cluster, &[server]),
                SERVER_ID,
                &["istio", "http/1.1"],
            )
        }],
        vec![route_table("out", &["*"], vec![route("/", cluster)])],
    );
    let client_shared = serve(
        client_l,
        "out",
        client_cfg,
        ca.svid_rx(CLIENT_ID),
        &node(
            "default",
            "productpage-v1",
            &[
                ("app", "productpage"),
                ("version", "v1"),
                ("service.istio.io/canonical-name", "productpage-svc"),
            ],
        ),
        CLIENT_ID,
    );
    TwoSidecars {
        client,
        client_shared,
        server_shared,
        seen,
    }
}

/// Sends a request through the client sidecar: status and the names of
/// the response headers starting with `x-envoy-peer`.
async fn send(proxy: SocketAddr, path: &str, grpc: bool) -> (u16, Vec<String>) {
    send_to(proxy, "reviews.shop:9080", path, grpc).await
}

/// [`send`] with this `Host`.
async fn send_to(proxy: SocketAddr, host: &str, path: &str, grpc: bool) -> (u16, Vec<String>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::post(format!("http://{proxy}{path}"))
        .header("host", host)
        // Whatever the app claims never reaches the peer as is.
        .header("x-envoy-peer-metadata-id", "forged");
    if grpc {
        req = req.header("content-type", "application/grpc");
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let names = resp
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("x-envoy-peer"))
        .collect();
    let _ = resp.into_body().collect().await.unwrap();
    (status, names)
}

/// The `istio_requests_total` lines of a sidecar.
fn requests(shared: &Shared) -> Vec<String> {
    shared
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .map(str::to_owned)
        .collect()
}

async fn wait_for_line(shared: &Shared, parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines = requests(shared);
        if let Some(l) = lines.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line with {parts:?} in {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn both_sidecars_label_requests_with_the_peer_workload_and_the_app_never_sees_the_exchange() {
    let env = two_sidecars().await;
    for _ in 0..3 {
        let (status, names) = send(env.client, "/r", false).await;
        assert_eq!(status, 200);
        assert!(
            names.is_empty(),
            "exchange headers reached the caller: {names:?}"
        );
    }
    let seen = env.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(Vec::is_empty),
        "exchange headers reached the app: {seen:?}"
    );
    let server = wait_for_line(
        &env.server_shared,
        &[
            "reporter=\"destination\"",
            "source_workload=\"productpage-v1\"",
            "source_workload_namespace=\"default\"",
            "source_app=\"productpage\"",
            "source_version=\"v1\"",
            "source_canonical_service=\"productpage-svc\"",
            "source_canonical_revision=\"v1\"",
            "source_cluster=\"Kubernetes\"",
            &format!("source_principal=\"{CLIENT_ID}\""),
            "destination_workload=\"reviews-v2\"",
            "destination_workload_namespace=\"shop\"",
            "destination_app=\"reviews\"",
            &format!("destination_principal=\"{SERVER_ID}\""),
            // `reviews.shop` in Host: not expanded (it could be a DNS name).
            "destination_service=\"reviews.shop\"",
            "request_protocol=\"http\"",
            "response_code=\"200\"",
            "connection_security_policy=\"mutual_tls\"",
        ],
    )
    .await;
    assert!(server.ends_with(" 3"), "{server}");
    let client = wait_for_line(
        &env.client_shared,
        &[
            "reporter=\"source\"",
            "source_workload=\"productpage-v1\"",
            "source_workload_namespace=\"default\"",
            "destination_workload=\"reviews-v2\"",
            "destination_workload_namespace=\"shop\"",
            "destination_app=\"reviews\"",
            "destination_version=\"v2\"",
            "destination_canonical_service=\"reviews\"",
            "destination_canonical_revision=\"v2\"",
            "destination_cluster=\"Kubernetes\"",
            &format!("destination_principal=\"{SERVER_ID}\""),
            "destination_service=\"reviews.shop.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"shop\"",
            "grpc_response_status=\"-\"",
        ],
    )
    .await;
    assert!(client.ends_with(" 3"), "{client}");
}

#[tokio::test]
async fn grpc_requests_are_labelled_grpc_with_their_status() {
    let env = two_sidecars().await;
    let (status, _) = send(env.client, "/grpc", true).await;
    assert_eq!(status, 200);
    for shared in [&env.client_shared, &env.server_shared] {
        wait_for_line(
            shared,
            &[
                "request_protocol=\"grpc\"",
                "grpc_response_status=\"5\"",
                "response_code=\"200\"",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn a_caller_outside_the_mesh_gets_no_exchange_and_unknown_labels() {
    // The server sidecar behind a plain-text inbound listener, called
    // directly: no exchange headers come back, the source is unknown.
    mesh_proxy::install_crypto_provider();
    let (app, seen) = app().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let in_l = inbound_listener(
        addr,
        vec![chain("inbound|9080||", None, hcm_filter("inbound"))],
    );
    let cfg = proxy_config(
        vec![in_l],
        vec![static_cluster("inbound|9080||", &[app])],
        vec![route_table(
            "inbound",
            &["*"],
            vec![route("/", "inbound|9080||")],
        )],
    );
    let shared = serve(
        l,
        "virtualInbound",
        cfg,
        mesh_proxy::tls::no_svid(),
        &NodeIdentity {
            service_name: "reviews".into(),
            ..node("shop", "reviews-v2", &[("app", "reviews")])
        },
        SERVER_ID,
    );
    // Called by IP address: the service is the one the sidecar serves.
    let (status, names) = send_to(addr, &addr.to_string(), "/r", false).await;
    assert_eq!(status, 200);
    assert!(names.is_empty(), "{names:?}");
    assert!(seen.lock().unwrap().iter().all(Vec::is_empty));
    wait_for_line(
        &shared,
        &[
            "source_workload=\"unknown\"",
            "source_workload_namespace=\"unknown\"",
            "source_canonical_revision=\"latest\"",
            "destination_workload=\"reviews-v2\"",
            "destination_principal=\"unknown\"",
            "destination_service=\"reviews.shop.svc.cluster.local\"",
            "destination_service_namespace=\"shop\"",
            "connection_security_policy=\"none\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn grpc_status_in_the_trailers_labels_the_request_when_the_call_ends() {
    let env = two_sidecars_for(true).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let req = hyper::Request::post(format!("http://{}/pkg.Svc/Call", env.client))
        .header("host", "reviews.shop:9080")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap();
    assert_eq!(
        body.trailers().map(|t| t["grpc-status"].clone()),
        Some(http::HeaderValue::from_static("0")),
        "the trailers reach the caller"
    );
    for shared in [&env.client_shared, &env.server_shared] {
        wait_for_line(
            shared,
            &[
                "request_protocol=\"grpc\"",
                "grpc_response_status=\"0\"",
                "source_workload=\"productpage-v1\"",
                "destination_workload=\"reviews-v2\"",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn inbound_tcp_connections_report_the_service_the_workload_serves() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A one-shot echo backend.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let in_l = inbound_listener(
        addr,
        vec![chain("inbound|3306||", None, tcp_filter("inbound|3306||"))],
    );
    let cfg = proxy_config(
        vec![in_l],
        vec![static_cluster("inbound|3306||", &[app])],
        vec![],
    );
    let shared = serve(
        l,
        "virtualInbound",
        cfg,
        mesh_proxy::tls::no_svid(),
        &NodeIdentity {
            service_name: "mysql".into(),
            ..node("shop", "mysql-v1", &[("app", "mysql")])
        },
        SERVER_ID,
    );
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = shared.metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"));
        if let Some(line) = line {
            for part in [
                "reporter=\"destination\"",
                "source_workload=\"unknown\"",
                "destination_workload=\"mysql-v1\"",
                "destination_app=\"mysql\"",
                "destination_service=\"mysql.shop.svc.cluster.local\"",
                "destination_service_name=\"mysql\"",
                "request_protocol=\"tcp\"",
            ] {
                assert!(line.contains(part), "{part} missing in {line}");
            }
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two sidecars proxying TCP over mutual TLS with `istio-peer-exchange`
/// negotiated: a client sidecar (outbound TCP listener, cluster over mTLS
/// offering the exchange) and a server sidecar (inbound TLS chain
/// accepting it, TCP to `app`). Returns the client sidecar's address and
/// both sidecars' state.
async fn two_tcp_sidecars(app: SocketAddr) -> (SocketAddr, Arc<Shared>, Arc<Shared>) {
    mesh_proxy::install_crypto_provider();
    let ca = TestCa::new();
    let server_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server_l.local_addr().unwrap();
    let inbound = mtls_chain(
        "inbound|3306||",
        tcp_filter("inbound|3306||"),
        &["istio-peer-exchange", "h2", "http/1.1"],
    );
    let in_l = inbound_listener(server, vec![inbound]);
    let server_cfg = proxy_config(
        vec![in_l],
        vec![static_cluster("inbound|3306||", &[app])],
        vec![],
    );
    let server_shared = serve(
        server_l,
        "virtualInbound",
        server_cfg,
        ca.svid_rx(SERVER_ID),
        &NodeIdentity {
            service_name: "reviews".into(),
            ..node(
                "shop",
                "reviews-v2",
                &[("app", "reviews"), ("version", "v2")],
            )
        },
        SERVER_ID,
    );
    let client_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = client_l.local_addr().unwrap();
    let cluster = "outbound|3306||reviews.shop.svc.cluster.local";
    let out_l = listener(
        "out",
        client,
        false,
        vec![chain("out", None, tcp_filter(cluster))],
        None,
    );
    let client_cfg = proxy_config(
        vec![out_l],
        vec![mtls(
            static_cluster(cluster, &[server]),
            SERVER_ID,
            &["istio-peer-exchange", "istio"],
        )],
        vec![],
    );
    let client_shared = serve(
        client_l,
        "out",
        client_cfg,
        ca.svid_rx(CLIENT_ID),
        &node(
            "default",
            "productpage-v1",
            &[("app", "productpage"), ("version", "v1")],
        ),
        CLIENT_ID,
    );
    (client, client_shared, server_shared)
}

/// The `istio_tcp_connections_closed_total` line of `shared`, once there.
async fn tcp_closed_line(shared: &Shared) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = shared.metrics.encode();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"))
        {
            return line.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn tcp_sidecars_exchange_metadata_in_band_and_the_apps_see_only_their_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A client-first app: reads until the caller half-closes, answers with
    // what it read, reversed.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got.reverse();
        s.write_all(&got).await.unwrap();
    });
    let (client, client_shared, server_shared) = two_tcp_sidecars(app).await;
    let mut c = tokio::net::TcpStream::connect(client).await.unwrap();
    c.write_all(b"0123456789").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"9876543210", "no preamble byte reached either app");
    let client_line = tcp_closed_line(&client_shared).await;
    for part in [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v2\"",
        "destination_workload_namespace=\"shop\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "destination_principal=\"spiffe://cluster.local/ns/shop/sa/reviews\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(
            client_line.contains(part),
            "{part} missing in {client_line}"
        );
    }
    let server_line = tcp_closed_line(&server_shared).await;
    for part in [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"default\"",
        "source_app=\"productpage\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_workload=\"reviews-v2\"",
        "destination_service=\"reviews.shop.svc.cluster.local\"",
    ] {
        assert!(
            server_line.contains(part),
            "{part} missing in {server_line}"
        );
    }
    // Bytes count the apps' data only, not the preambles.
    let sent = server_shared
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("istio_tcp_received_bytes_total{"))
        .map(str::to_owned)
        .unwrap();
    assert!(sent.ends_with(" 10"), "{sent}");
}

#[tokio::test]
async fn a_server_first_protocol_speaks_first_through_the_exchange() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server-first app (like MySQL): it greets, then waits for the
    // caller. Neither sidecar may wait for the caller's first bytes.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        s.write_all(b"hello\n").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let (client, _client_shared, _server_shared) = two_tcp_sidecars(app).await;
    let mut c = tokio::net::TcpStream::connect(client).await.unwrap();
    let mut greeting = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut greeting))
        .await
        .expect("the greeting arrives without the caller writing first")
        .unwrap();
    assert_eq!(&greeting, b"hello\n");
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}
