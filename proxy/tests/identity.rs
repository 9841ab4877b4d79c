//! The proxy gets its SVID from the real CA (gRPC over TLS on loopback,
//! join token), publishes it to the data path, exports its expiry, and is
//! not ready until it has it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_ca::auth::Authenticator;
use mesh_ca::client::{CaClientConfig, Credential};
use mesh_ca::metrics::CaMetrics;
use mesh_ca::server::{ServeOptions, serve};
use mesh_ca::token::JoinTokens;
use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, SpiffeId};
use mesh_proxy::admin::{self, Role};
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Shared, WorkloadInfo};
use prost::Name;
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn health(addr: std::net::SocketAddr) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/healthz/ready")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn ready_config() -> ProxyConfig {
    use mesh_proto::envoy::pb::envoy::config::{cluster::v3::Cluster, listener::v3::Listener};
    let mut cfg = ProxyConfig::default();
    cfg.type_versions.insert(Cluster::type_url(), "1".into());
    cfg.type_versions.insert(Listener::type_url(), "1".into());
    cfg
}

#[tokio::test]
async fn proxy_gets_its_svid_from_the_ca_and_is_ready_only_with_it() {
    mesh_proxy::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        CertificateAuthority::init(
            dir.path(),
            &InitOptions::new("cluster.local"),
            IssuePolicy::default(),
        )
        .unwrap(),
    );
    let tokens = Arc::new(JoinTokens::load_or_create(dir.path()).unwrap());
    let id: SpiffeId = "spiffe://cluster.local/ns/bookshop/sa/reviews"
        .parse()
        .unwrap();
    let token = tokens.create(&id, Duration::from_secs(600), true);
    let ca_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", ca_listener.local_addr().unwrap());
    let served = ca.clone();
    let auth = Authenticator::default().with_join_tokens(tokens.clone());
    tokio::spawn(async move {
        serve(
            served,
            auth,
            CaMetrics::default(),
            ca_listener,
            &ServeOptions::default(),
            std::future::pending(),
        )
        .await
    });

    let (_config_tx, config_rx) = watch::channel(Arc::new(ready_config()));
    let (svid_tx, svid_rx) = watch::channel(None);
    let shared = Shared::with_svid(config_rx, WorkloadInfo::default(), svid_rx);
    shared
        .svid_required
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let health_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_addr = health_listener.local_addr().unwrap();
    tokio::spawn(admin::serve(health_listener, Role::Health, shared.clone()));

    // Config is in, the certificate is not: not ready, and it says why.
    let (status, body) = health(health_addr).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("waiting for the workload certificate"),
        "{body}"
    );

    mesh_proxy::identity::spawn(
        CaClientConfig {
            endpoint,
            ca_roots_pem: ca.trust_bundle().pem(),
            server_name: "mesh-ca".into(),
            credential: Credential::JoinToken(token),
            spiffe_id: id.clone(),
            ttl: None,
        },
        &shared.metrics,
        svid_tx,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let svid = loop {
        if let Some(svid) = shared.svid.borrow().clone() {
            break svid;
        }
        assert!(Instant::now() < deadline, "no SVID from the CA");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        mesh_ca::verifier::spiffe_id_of_cert(&svid.chain[0]),
        Some(id)
    );
    assert_eq!(svid.roots, ca.trust_bundle().roots().to_vec());

    assert_eq!(health(health_addr).await, (200, "LIVE\n".to_string()));
    let metrics = shared.metrics.encode();
    let expiry = metrics
        .lines()
        .find(|l| l.starts_with("mesh_ca_client_cert_expiry_timestamp_seconds"))
        .unwrap_or_else(|| panic!("no expiry metric in:\n{metrics}"));
    let value: i64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        value > now + 3600,
        "expiry {value} should be about a day ahead of {now}"
    );
}
