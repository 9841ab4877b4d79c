//! L4 routing on loopback with a fake ADS server: a `tcp_proxy` with
//! `weighted_clusters` splits connections by weight, and filter chains
//! matched on `server_names` send TLS by its SNI to the right backend,
//! untouched (the client's handshake completes with the backend itself);
//! a `STRICT_DNS` cluster naming `localhost` reaches a loopback backend.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3 as xti;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3 as xtcp;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::Shared;
use mesh_proxy::xds::{NodeIdentity, XdsClient, XdsClientConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A plain TCP backend that writes its name and closes.
async fn named_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TLS backend for `host` (self-signed) that writes its name after the
/// handshake; returns its address and certificate.
async fn tls_backend(host: &'static str) -> (SocketAddr, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(host.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, cert)
}

fn weighted(clusters: &[(&str, u32)]) -> xl::Filter {
    let t = xtcp::TcpProxy {
        stat_prefix: "split".into(),
        cluster_specifier: Some(xtcp::tcp_proxy::ClusterSpecifier::WeightedClusters(
            xtcp::tcp_proxy::WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(
                        |(name, weight)| xtcp::tcp_proxy::weighted_cluster::ClusterWeight {
                            name: (*name).into(),
                            weight: *weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            },
        )),
        ..Default::default()
    };
    xl::Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(any(&t))),
    }
}

fn sni_chain(name: &str, server_names: &[&str], cluster: &str) -> xl::FilterChain {
    xl::FilterChain {
        name: name.into(),
        filter_chain_match: Some(xl::FilterChainMatch {
            server_names: server_names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        filters: vec![tcp_filter(cluster)],
        ..Default::default()
    }
}

/// Starts a proxy fed by a fake ADS server, binds `names` listeners on
/// loopback and lets `build` describe clusters and listeners for them.
async fn start(
    clusters: Vec<(String, mesh_proto::envoy::pb::google::protobuf::Any)>,
    listeners: impl FnOnce(&[SocketAddr]) -> Vec<xl::Listener>,
    names: &[&str],
) -> (FakeAds, Vec<SocketAddr>, watch::Receiver<Arc<ProxyConfig>>) {
    mesh_proxy::install_crypto_provider();
    let mut ads = FakeAds::start().await;
    let mut cfg = XdsClientConfig::new(ads.url(), NodeIdentity::default());
    cfg.initial_backoff = Duration::from_millis(20);
    let (client, rx) = XdsClient::new(cfg);
    tokio::spawn(client.run());
    let shared = Shared::new(rx.clone());
    let mut addrs = Vec::new();
    for name in names {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(mesh_proxy::listener::serve(
            l,
            (*name).into(),
            shared.clone(),
        ));
    }
    ads.expect_delta("LDS subscribe", |r| r.type_url == LDS())
        .await;
    let n = clusters.len();
    ads.push_delta(&CDS(), "c1", clusters, vec![]);
    let ls = listeners(&addrs)
        .into_iter()
        .map(|l| (l.name.clone(), any(&l)))
        .collect();
    ads.push_delta(&LDS(), "l1", ls, vec![]);
    let mut w = rx.clone();
    let want = names.len();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|c| c.listeners.len() == want && c.clusters.len() == n),
    )
    .await
    .expect("config applied")
    .unwrap();
    (ads, addrs, rx)
}

async fn read_all(mut s: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_tcp_split_follows_the_weights_per_connection() {
    let (a, b) = (named_backend("A").await, named_backend("B").await);
    let clusters = vec![
        ("a".to_string(), any(&static_cluster("a", &[a]))),
        ("b".to_string(), any(&static_cluster("b", &[b]))),
    ];
    let (_ads, addrs, _rx) = start(
        clusters,
        |addrs| {
            vec![listener(
                "split",
                addrs[0],
                false,
                vec![],
                Some(xl::FilterChain {
                    name: "split".into(),
                    filters: vec![weighted(&[("a", 80), ("b", 20)])],
                    ..Default::default()
                }),
            )]
        },
        &["split"],
    )
    .await;
    const N: usize = 400;
    let mut to_a = 0;
    for _ in 0..N {
        let s = TcpStream::connect(addrs[0]).await.unwrap();
        match read_all(s).await.as_str() {
            "A" => to_a += 1,
            "B" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // Binomial(400, 0.8): mean 320, sd 8; allow 5 sd.
    assert!((280..=360).contains(&to_a), "{to_a} of {N} went to A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_routed_by_sni_and_passed_through_untouched() {
    let (a, a_cert) = tls_backend("a.example").await;
    let (b, b_cert) = tls_backend("b.example").await;
    let (c, c_cert) = tls_backend("c.example").await;
    let clusters = vec![
        ("a".to_string(), any(&static_cluster("a", &[a]))),
        ("b".to_string(), any(&static_cluster("b", &[b]))),
        ("rest".to_string(), any(&static_cluster("rest", &[c]))),
    ];
    let (_ads, addrs, _rx) = start(
        clusters,
        |addrs| {
            let mut l = listener(
                "sni",
                addrs[0],
                false,
                vec![
                    sni_chain("to-a", &["a.example"], "a"),
                    sni_chain("to-b", &["*.b.example", "b.example"], "b"),
                    sni_chain("no-match", &[], "rest"),
                ],
                None,
            );
            l.listener_filters = vec![xl::ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(xl::listener_filter::ConfigType::TypedConfig(any(
                    &xti::TlsInspector::default(),
                ))),
                filter_disabled: None,
            }];
            vec![l]
        },
        &["sni"],
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in [a_cert, b_cert, c_cert] {
        roots.add(cert).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    for (sni, expected) in [
        ("a.example", "a.example"),
        ("b.example", "b.example"),
        ("A.EXAMPLE", "a.example"),
        // No chain names c.example: the chain without server_names.
        ("c.example", "c.example"),
    ] {
        for _ in 0..3 {
            let tcp = TcpStream::connect(addrs[0]).await.unwrap();
            let name = ServerName::try_from(sni.to_string()).unwrap();
            // The handshake only succeeds with the backend holding the
            // certificate for `sni`: the proxy forwarded the TLS as is.
            let tls = connector
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
            assert_eq!(read_all(tls).await, expected, "SNI {sni}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_cluster_resolves_localhost_to_the_loopback_backend() {
    use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
    use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
    let backend = named_backend("dns").await;
    // The cluster meshd emits for `resolution: DNS`: the host name and port
    // in its own load_assignment, no EDS.
    let mut c = static_cluster("outbound|80||ext.example", &[backend]);
    c.cluster_discovery_type = Some(xcl::cluster::ClusterDiscoveryType::Type(
        xcl::cluster::DiscoveryType::StrictDns as i32,
    ));
    c.dns_lookup_family = xcl::cluster::DnsLookupFamily::V4Only as i32;
    let la = c.load_assignment.as_mut().unwrap();
    let Some(
        mesh_proto::envoy::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
            e,
        ),
    ) = &mut la.endpoints[0].lb_endpoints[0].host_identifier
    else {
        unreachable!()
    };
    let Some(xc::Address {
        address: Some(xc::address::Address::SocketAddress(sa)),
    }) = &mut e.address
    else {
        unreachable!()
    };
    sa.address = "localhost".into();
    let clusters = vec![("outbound|80||ext.example".to_string(), any(&c))];
    let (_ads, addrs, rx) = start(
        clusters,
        |addrs| {
            vec![listener(
                "tcp",
                addrs[0],
                false,
                vec![],
                Some(chain("ext", None, tcp_filter("outbound|80||ext.example"))),
            )]
        },
        &["tcp"],
    )
    .await;
    // The first resolution runs in the background: poll until it is in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = TcpStream::connect(addrs[0]).await.unwrap();
        if read_all(s).await == "dns" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "localhost never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let config = rx.borrow().clone();
    let cluster = &config.clusters["outbound|80||ext.example"];
    let la = config.cluster_endpoints(cluster).unwrap();
    assert_eq!(la.endpoints[0].address, backend);
}
