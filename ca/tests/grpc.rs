//! The CA over gRPC and TLS on an ephemeral loopback port: the workload
//! client gets and renews SVIDs, and every rejection is a clear status.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mesh_ca::auth::Authenticator;
use mesh_ca::client::{CaClient, CaClientConfig, Credential};
use mesh_ca::csr::build_csr_pem;
use mesh_ca::metrics::CaMetrics;
use mesh_ca::server::{ServeOptions, serve};
use mesh_ca::token::{JoinTokenClaims, JoinTokens};
use mesh_ca::verifier::PeerPolicy;
use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, SpiffeId};
use mesh_proto::ca::v1::certificate_service_client::CertificateServiceClient;
use mesh_proto::ca::v1::{CreateCertificateRequest, GetTrustBundleRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

struct Ca {
    ca: Arc<CertificateAuthority>,
    tokens: Arc<JoinTokens>,
    endpoint: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Ca {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn id() -> SpiffeId {
    "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .unwrap()
}

async fn start() -> Ca {
    mesh_ca::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    let ca =
        Arc::new(CertificateAuthority::init(dir.path(), &opts, IssuePolicy::default()).unwrap());
    let tokens = Arc::new(JoinTokens::load_or_create(dir.path()).unwrap());
    let auth = Authenticator::default().with_join_tokens(tokens.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = ca.clone();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve(
            served,
            auth,
            CaMetrics::default(),
            listener,
            &ServeOptions::default(),
            shutdown,
        )
        .await
        .unwrap();
    });
    Ca {
        ca,
        tokens,
        endpoint,
        _dir: dir,
        stop: Some(stop),
    }
}

impl Ca {
    fn client_config(&self, credential: Credential) -> CaClientConfig {
        CaClientConfig {
            endpoint: self.endpoint.clone(),
            ca_roots_pem: self.ca.trust_bundle().pem(),
            server_name: "mesh-ca".into(),
            credential,
            spiffe_id: id(),
            ttl: None,
        }
    }

    async fn raw(&self) -> CertificateServiceClient<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.trust_bundle().pem()))
            .domain_name("mesh-ca");
        let channel = Channel::from_shared(self.endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        CertificateServiceClient::new(channel)
    }

    async fn create(&self, token: &str, csr_pem: String) -> Result<Vec<String>, tonic::Status> {
        let mut req = tonic::Request::new(CreateCertificateRequest {
            csr_pem,
            validity_seconds: 0,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(self
            .raw()
            .await
            .create_certificate(req)
            .await?
            .into_inner()
            .cert_chain)
    }

    fn token(&self, single_use: bool) -> String {
        self.tokens
            .create(&id(), Duration::from_secs(600), single_use)
    }
}

fn csr_for(id: &SpiffeId) -> String {
    build_csr_pem(id, &rcgen::KeyPair::generate().unwrap()).unwrap()
}

#[tokio::test]
async fn workload_client_gets_a_verifiable_svid_and_renews_over_mtls() {
    let ca = start().await;
    let client = CaClient::new(ca.client_config(Credential::JoinToken(ca.token(true))));
    let first = client.request(None).await.unwrap();
    assert_eq!(first.spiffe_id, id());
    assert_eq!(first.chain.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let chain: Vec<String> = first
        .chain
        .iter()
        .map(|c| mesh_ca::pem::cert_pem(c))
        .collect();
    let (ok, out) = common::openssl_verify(
        dir.path(),
        &first.roots.pem(),
        &chain[1..].concat(),
        &chain[0],
    );
    assert!(ok, "openssl verify: {out}");
    // The join token was single-use: renewal authenticates with the SVID.
    let second = client.request(Some(&first)).await.unwrap();
    assert_ne!(second.chain[0], first.chain[0]);
    // Without the SVID, the used token is refused as a replay.
    let err = client.request(None).await.unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    // The certs plug into rustls with SPIFFE verification.
    second.server_config(PeerPolicy::TrustDomain).unwrap();
    second.client_config(PeerPolicy::AnyOf(vec![id()])).unwrap();
}

#[tokio::test]
async fn trust_bundle_is_served_as_pem_and_spiffe_json() {
    let ca = start().await;
    let resp = ca
        .raw()
        .await
        .get_trust_bundle(GetTrustBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.trust_domain, "cluster.local");
    assert_eq!(resp.roots_pem, ca.ca.trust_bundle().roots_pem());
    let v: serde_json::Value = serde_json::from_str(&resp.spiffe_bundle_json).unwrap();
    assert_eq!(v["keys"][0]["use"], "x509-svid");
}

#[tokio::test]
async fn csr_for_another_identity_than_the_callers_is_permission_denied() {
    let ca = start().await;
    let other: SpiffeId = "spiffe://cluster.local/ns/kube-system/sa/admin"
        .parse()
        .unwrap();
    let err = ca
        .create(&ca.token(false), csr_for(&other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("kube-system/sa/admin"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("authenticated as"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn csr_with_a_bad_signature_is_invalid_argument() {
    let ca = start().await;
    let pem = csr_for(&id());
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = mesh_ca::pem::encode("CERTIFICATE REQUEST", &bytes);
    let err = ca.create(&ca.token(false), tampered).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("signature does not verify"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn expired_join_token_is_unauthenticated() {
    let ca = start().await;
    let expired = ca.tokens.encode(&JoinTokenClaims {
        sub: id().to_string(),
        exp: 1_000_000,
        jti: "old".into(),
        single_use: false,
    });
    let err = ca.create(&expired, csr_for(&id())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test]
async fn replayed_single_use_token_is_unauthenticated() {
    let ca = start().await;
    let token = ca.token(true);
    ca.create(&token, csr_for(&id())).await.unwrap();
    let err = ca.create(&token, csr_for(&id())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("single-use"), "{}", err.message());
}

#[tokio::test]
async fn missing_credential_is_unauthenticated() {
    let ca = start().await;
    let req = tonic::Request::new(CreateCertificateRequest {
        csr_pem: csr_for(&id()),
        validity_seconds: 0,
    });
    let err = ca.raw().await.create_certificate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("no credential"), "{}", err.message());
}

#[tokio::test]
async fn rsa_1024_csr_is_invalid_argument() {
    let ca = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pem = common::openssl_rsa_csr(dir.path(), 1024, &[&id().to_string()]);
    let err = ca.create(&ca.token(false), pem).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("minimum is 2048"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn csr_with_two_uri_sans_is_invalid_argument() {
    let ca = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pem = common::openssl_rsa_csr(
        dir.path(),
        2048,
        &[
            &id().to_string(),
            "spiffe://cluster.local/ns/default/sa/other",
        ],
    );
    let err = ca.create(&ca.token(false), pem).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("exactly one URI SAN"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn rsa_2048_csr_from_openssl_is_signed() {
    let ca = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pem = common::openssl_rsa_csr(dir.path(), 2048, &[&id().to_string()]);
    let chain = ca.create(&ca.token(false), pem).await.unwrap();
    let (ok, out) = common::openssl_verify(
        dir.path(),
        &ca.ca.trust_bundle().pem(),
        &chain[1..].concat(),
        &chain[0],
    );
    assert!(ok, "openssl verify: {out}");
}

#[tokio::test]
async fn two_step_root_rotation_reaches_workloads_without_breaking_tls() {
    use mesh_ca::server::serve_with_reload;
    mesh_ca::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    let ca = CertificateAuthority::init(dir.path(), &opts, IssuePolicy::default()).unwrap();
    let root1 = ca.trust_bundle().roots_pem()[0].clone();
    let tokens = Arc::new(JoinTokens::load_or_create(dir.path()).unwrap());
    let token = tokens.create(&id(), Duration::from_secs(600), true);
    let auth = Authenticator::default().with_join_tokens(tokens);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ca_dir = dir.path().to_path_buf();
    let server = tokio::spawn(async move {
        let load =
            move || CertificateAuthority::load(&ca_dir, None, IssuePolicy::default()).map(Arc::new);
        let shutdown = async {
            let _ = stopped.await;
        };
        serve_with_reload(
            load,
            auth,
            CaMetrics::default(),
            listener,
            ServeOptions::default(),
            reloads,
            shutdown,
        )
        .await
    });
    let client = CaClient::new(CaClientConfig {
        endpoint,
        ca_roots_pem: root1.clone(),
        server_name: "mesh-ca".into(),
        credential: Credential::JoinToken(token),
        spiffe_id: id(),
        ttl: None,
    });
    let root_of = |c: &mesh_ca::WorkloadCert| mesh_ca::pem::cert_pem(c.chain.last().unwrap());

    let first = client.request(None).await.unwrap();
    assert_eq!(root_of(&first), root1);

    // Step 1: the new root joins the bundle; signing is unchanged.
    CertificateAuthority::prepare_root_rotation(dir.path(), IssuePolicy::default()).unwrap();
    reload.send(()).await.unwrap();
    let mut second = client.request(Some(&first)).await.unwrap();
    for _ in 0..100 {
        if second.roots.roots().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        second = client.request(Some(&second)).await.unwrap();
    }
    assert_eq!(
        second.roots.roots().len(),
        2,
        "workload learnt the new root"
    );
    assert_eq!(root_of(&second), root1, "still signed under the old root");

    // Step 2: the new root signs; the client follows because it learnt it.
    CertificateAuthority::activate_root_rotation(dir.path(), IssuePolicy::default()).unwrap();
    reload.send(()).await.unwrap();
    let mut third = client.request(Some(&second)).await.unwrap();
    for _ in 0..100 {
        if root_of(&third) != root1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        third = client.request(Some(&third)).await.unwrap();
    }
    assert_ne!(root_of(&third), root1, "signed under the new root");
    // SVIDs from before and after the rotation both verify with the bundle.
    let tmp = tempfile::tempdir().unwrap();
    for cert in [&first, &third] {
        let chain: Vec<String> = cert
            .chain
            .iter()
            .map(|c| mesh_ca::pem::cert_pem(c))
            .collect();
        let (ok, out) = common::openssl_verify(
            tmp.path(),
            &third.roots.pem(),
            &chain[1..].concat(),
            &chain[0],
        );
        assert!(ok, "openssl verify: {out}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
