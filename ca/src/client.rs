//! The workload side, used by proxies and gateways: generate the key in
//! memory, build the CSR, call the CA, publish the certificate through a
//! `watch` channel, renew at half the lifetime (with jitter), and on a CA
//! outage retry with backoff while keeping the current certificate until it
//! expires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_model::SpiffeId;
use mesh_proto::ca::v1::certificate_service_client::CertificateServiceClient;
use mesh_proto::ca::v1::{CreateCertificateRequest, GetTrustBundleRequest};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::csr::build_csr_pem;
use crate::metrics::ClientMetrics;
use crate::pem::{PemError, cert_pem, parse_certs};
use crate::verifier::{PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier};

/// Why the workload could not get a certificate.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA endpoint or TLS settings are invalid, or the connection failed.
    #[error("connecting to the CA failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The CA refused or failed the request.
    #[error("the CA refused: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The credential file could not be read.
    #[error("reading the credential {path}: {source}")]
    Credential {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key or CSR could not be built.
    #[error("building the key or CSR failed: {0}")]
    Csr(#[from] rcgen::Error),
    /// The CA's answer is not a usable certificate chain.
    #[error("the CA returned an unusable chain: {0}")]
    BadChain(String),
    /// PEM input (chain or roots) is malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A bearer credential cannot be sent as gRPC metadata.
    #[error("the credential is not valid as gRPC metadata")]
    CredentialFormat,
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// How the workload proves its identity to the CA.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A join token from `mesh-ca token create` / `meshctl`.
    JoinToken(String),
    /// A file holding a token, re-read on every request (a projected
    /// Kubernetes service-account token is rotated by the kubelet).
    TokenFile(PathBuf),
}

/// Where and how to reach the CA.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// The CA's URL, e.g. `https://127.0.0.1:15012`.
    pub endpoint: String,
    /// PEM roots that the CA's serving certificate chains to.
    pub ca_roots_pem: String,
    /// The name to verify in the CA's serving certificate (`mesh-ca` by
    /// default; see [`crate::server::DEFAULT_SERVER_NAME`]).
    pub server_name: String,
    /// The credential for the first request (and whenever no valid
    /// certificate is at hand); renewals use the current SVID over mTLS.
    pub credential: Credential,
    /// The identity to request.
    pub spiffe_id: SpiffeId,
    /// Requested lifetime; `None` means the CA's default.
    pub ttl: Option<Duration>,
}

/// A workload certificate with its key and the trust bundle.
#[derive(Debug)]
pub struct WorkloadCert {
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates, up to the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (generated in memory, never written to disk).
    pub key: PrivateKeyDer<'static>,
    /// The roots to trust for peers.
    pub roots: TrustBundle,
    /// The leaf's `notBefore`.
    pub not_before: SystemTime,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
}

impl WorkloadCert {
    /// Builds from the CA's PEM chain and the PKCS#8 key that signed the CSR.
    pub fn from_parts(
        spiffe_id: SpiffeId,
        chain_pem: &[String],
        key_pkcs8_der: Vec<u8>,
        roots: TrustBundle,
    ) -> Result<Self, ClientError> {
        let chain = parse_certs("certificate chain", &chain_pem.concat())?;
        let (_, leaf) = X509Certificate::from_der(&chain[0])
            .map_err(|e| ClientError::BadChain(e.to_string()))?;
        let ts = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let not_before = ts(leaf.validity().not_before.timestamp());
        let not_after = ts(leaf.validity().not_after.timestamp());
        match crate::verifier::spiffe_id_of_cert(&chain[0]) {
            Some(id) if id == spiffe_id => {}
            other => {
                return Err(ClientError::BadChain(format!(
                    "leaf SPIFFE ID is {other:?}, expected {spiffe_id}"
                )));
            }
        }
        Ok(WorkloadCert {
            spiffe_id,
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der)),
            roots,
            not_before,
            not_after,
        })
    }

    /// The chain as one PEM string.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| cert_pem(c)).collect()
    }

    /// The key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        crate::pem::encode("PRIVATE KEY", self.key.secret_der())
    }

    /// A rustls server config presenting this SVID and requiring client
    /// SVIDs allowed by `peers`.
    pub fn server_config(&self, peers: PeerPolicy) -> Result<rustls::ServerConfig, ClientError> {
        let verifier = SpiffeClientVerifier::new(&self.roots, peers)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(self.chain.clone(), self.key.clone_key())?)
    }

    /// A rustls client config presenting this SVID and accepting servers
    /// whose SVID is allowed by `peers` (the dialled name is not checked).
    pub fn client_config(&self, peers: PeerPolicy) -> Result<rustls::ClientConfig, ClientError> {
        let verifier = SpiffeServerVerifier::new(&self.roots, peers);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?)
    }
}

/// Something that can produce a fresh workload certificate: the gRPC
/// [`CaClient`], or a fake in tests.
pub trait CertSource: Send + Sync + 'static {
    /// Gets a new certificate; `current` is the one in use, if still valid
    /// (a source may use it to authenticate).
    fn fetch(
        &self,
        current: Option<Arc<WorkloadCert>>,
    ) -> impl Future<Output = Result<WorkloadCert, ClientError>> + Send;
}

/// Client of the CA's gRPC API.
#[derive(Debug, Clone)]
pub struct CaClient {
    config: CaClientConfig,
    /// Roots learnt from the CA's trust bundle, trusted for the CA's serving
    /// certificate in addition to the configured ones, so that the client
    /// follows a root rotation.
    learnt_roots: Arc<std::sync::Mutex<String>>,
}

impl CaClient {
    /// A client for `config` (connections are made per request, so a
    /// renewal can present the current SVID).
    pub fn new(config: CaClientConfig) -> Self {
        CaClient {
            config,
            learnt_roots: Arc::default(),
        }
    }

    async fn channel(&self, identity: Option<&WorkloadCert>) -> Result<Channel, ClientError> {
        let learnt = self
            .learnt_roots
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(format!(
                "{}{learnt}",
                self.config.ca_roots_pem
            )))
            .domain_name(self.config.server_name.clone());
        if let Some(cert) = identity {
            tls = tls.identity(TlsIdentity::from_pem(cert.chain_pem(), cert.key_pem()));
        }
        let channel = Endpoint::from_shared(self.config.endpoint.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .connect()
            .await?;
        Ok(channel)
    }

    async fn bearer(&self) -> Result<String, ClientError> {
        Ok(match &self.config.credential {
            Credential::JoinToken(t) => t.trim().to_string(),
            Credential::TokenFile(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ClientError::Credential {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        })
    }

    /// Fetches the trust bundle.
    pub async fn trust_bundle(&self) -> Result<TrustBundle, ClientError> {
        let channel = self.channel(None).await?;
        let resp = CertificateServiceClient::new(channel)
            .get_trust_bundle(GetTrustBundleRequest {})
            .await?
            .into_inner();
        let roots = parse_certs("trust bundle", &resp.roots_pem.concat())?;
        Ok(TrustBundle::new(&resp.trust_domain, roots))
    }

    /// Generates a key, sends a CSR and returns the new certificate. With a
    /// valid `current` certificate the request is authenticated by it over
    /// mTLS; otherwise by the configured credential.
    pub async fn request(
        &self,
        current: Option<&WorkloadCert>,
    ) -> Result<WorkloadCert, ClientError> {
        let current = current.filter(|c| c.not_after > SystemTime::now());
        match self.request_once(current).await {
            Err(ClientError::Status(status))
                if current.is_some() && status.code() == tonic::Code::Unauthenticated =>
            {
                // The CA no longer accepts our SVID (e.g. it was replaced by
                // an unrelated CA): fall back to the configured credential.
                tracing::warn!(
                    message = status.message(),
                    "renewal with the current SVID refused; retrying with the credential"
                );
                self.request_once(None).await
            }
            other => other,
        }
    }

    async fn request_once(
        &self,
        current: Option<&WorkloadCert>,
    ) -> Result<WorkloadCert, ClientError> {
        let key = rcgen::KeyPair::generate()?;
        let csr_pem = build_csr_pem(&self.config.spiffe_id, &key)?;
        let channel = self.channel(current).await?;
        let mut request = tonic::Request::new(CreateCertificateRequest {
            csr_pem,
            validity_seconds: self
                .config
                .ttl
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        });
        if current.is_none() {
            let value = format!("Bearer {}", self.bearer().await?)
                .parse()
                .map_err(|_| ClientError::CredentialFormat)?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut client = CertificateServiceClient::new(channel.clone());
        let resp = client.create_certificate(request).await?.into_inner();
        let bundle = client
            .get_trust_bundle(GetTrustBundleRequest {})
            .await?
            .into_inner();
        let roots = TrustBundle::new(
            &bundle.trust_domain,
            parse_certs("trust bundle", &bundle.roots_pem.concat())?,
        );
        if let Ok(mut learnt) = self.learnt_roots.lock() {
            *learnt = roots.pem();
        }
        WorkloadCert::from_parts(
            self.config.spiffe_id.clone(),
            &resp.cert_chain,
            key.serialize_der(),
            roots,
        )
    }
}

impl CertSource for CaClient {
    async fn fetch(&self, current: Option<Arc<WorkloadCert>>) -> Result<WorkloadCert, ClientError> {
        self.request(current.as_deref()).await
    }
}

/// Renewal timing.
#[derive(Debug, Clone, Copy)]
pub struct RenewPolicy {
    /// Fraction of the remaining lifetime after which to renew (0.5: half).
    pub renew_at: f64,
    /// Up to this fraction of the remaining lifetime is taken off the
    /// renewal delay at random, so a fleet does not renew in lockstep.
    pub jitter: f64,
    /// First retry delay after a failure.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for RenewPolicy {
    fn default() -> Self {
        RenewPolicy {
            renew_at: 0.5,
            jitter: 0.1,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Keeps a workload certificate fresh and publishes it.
#[derive(Debug)]
pub struct Identity;

impl Identity {
    /// Spawns the renewal task. The receiver holds `None` until the first
    /// certificate arrives, and again if the certificate expires while the
    /// CA is unreachable.
    pub fn spawn<S: CertSource>(
        source: S,
        policy: RenewPolicy,
        metrics: ClientMetrics,
    ) -> (
        watch::Receiver<Option<Arc<WorkloadCert>>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(renew_loop(source, policy, metrics, tx));
        (rx, task)
    }
}

/// Remaining lifetime of `cert` as a tokio instant (so that renewal timing
/// follows tokio's clock, which tests can pause and advance).
fn expiry_instant(cert: &WorkloadCert) -> Instant {
    let remaining = cert
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + remaining
}

async fn renew_loop<S: CertSource>(
    source: S,
    policy: RenewPolicy,
    metrics: ClientMetrics,
    tx: watch::Sender<Option<Arc<WorkloadCert>>>,
) {
    let mut current: Option<(Arc<WorkloadCert>, Instant)> = None;
    let mut backoff = policy.min_backoff;
    loop {
        let valid = current
            .as_ref()
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(c, _)| c.clone());
        match source.fetch(valid).await {
            Ok(cert) => {
                let cert = Arc::new(cert);
                let expires = expiry_instant(&cert);
                let remaining = expires.saturating_duration_since(Instant::now());
                let secs = cert
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                metrics
                    .cert_expiry_seconds
                    .set(i64::try_from(secs).unwrap_or(i64::MAX));
                metrics.renewals.inc();
                tracing::info!(spiffe_id = %cert.spiffe_id, expires_in = ?remaining, "workload certificate obtained");
                current = Some((cert.clone(), expires));
                tx.send_replace(Some(cert));
                backoff = policy.min_backoff;
                let jitter = rand::random::<f64>() * policy.jitter;
                // Never renew in a tight loop, even for a certificate that
                // is (by our clock) already about to expire.
                let delay = remaining
                    .mul_f64((policy.renew_at - jitter).clamp(0.05, 1.0))
                    .max(policy.min_backoff);
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                metrics.failures.inc();
                tracing::warn!(%error, retry_in = ?backoff, "getting a workload certificate failed");
                let wake = Instant::now() + backoff;
                if let Some((_, exp)) = &current
                    && *exp <= wake
                {
                    // The certificate expires before the next attempt: stop
                    // publishing it when it does, then keep retrying.
                    tokio::time::sleep_until(*exp).await;
                    tracing::error!("workload certificate expired while the CA is unreachable");
                    current = None;
                    metrics.cert_expiry_seconds.set(0);
                    tx.send_replace(None);
                }
                tokio::time::sleep_until(wake).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{CertificateAuthority, InitOptions, IssuePolicy};
    use crate::csr::verify_csr_pem;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A CA in-process that can be switched off to simulate an outage.
    struct FakeCa {
        ca: CertificateAuthority,
        down: Arc<AtomicBool>,
        fetches: Arc<AtomicUsize>,
        _dir: tempfile::TempDir,
    }

    impl CertSource for FakeCa {
        async fn fetch(
            &self,
            _current: Option<Arc<WorkloadCert>>,
        ) -> Result<WorkloadCert, ClientError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(ClientError::Status(tonic::Status::unavailable("CA down")));
            }
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
                .parse()
                .unwrap();
            let key = rcgen::KeyPair::generate()?;
            let csr = verify_csr_pem(&build_csr_pem(&id, &key)?).unwrap();
            let issued = self
                .ca
                .sign_csr(&csr, Some(Duration::from_secs(3600)))
                .unwrap();
            WorkloadCert::from_parts(
                id,
                &issued.chain_pem,
                key.serialize_der(),
                self.ca.trust_bundle().clone(),
            )
        }
    }

    fn fake() -> (FakeCa, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(
            dir.path(),
            &InitOptions::new("cluster.local"),
            IssuePolicy::default(),
        )
        .unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fake = FakeCa {
            ca,
            down: down.clone(),
            fetches: fetches.clone(),
            _dir: dir,
        };
        (fake, down, fetches)
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_half_life_and_survives_a_ca_outage_until_expiry() {
        let (fake, down, fetches) = fake();
        let metrics = ClientMetrics::default();
        let (mut rx, task) = Identity::spawn(fake, RenewPolicy::default(), metrics.clone());
        rx.wait_for(|c| c.is_some()).await.unwrap();
        let first = rx.borrow().clone().unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(metrics.cert_expiry_seconds.get() > 0);

        // 1 h lifetime: renewal comes between 40% and 50% of it, well
        // before expiry.
        tokio::time::sleep(Duration::from_secs(1440 - 5)).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "no renewal before 40%");
        tokio::time::sleep(Duration::from_secs(1800 - 1440 + 10)).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "renewed by half-life");
        let second = rx.borrow().clone().unwrap();
        assert_ne!(first.chain[0], second.chain[0]);

        // The CA goes away: retries fail, the current cert keeps serving.
        down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2400)).await;
        assert!(metrics.failures.get() > 0, "retried while down");
        let still = rx.borrow().clone().expect("cert kept while valid");
        assert_eq!(still.chain[0], second.chain[0]);

        // Past its expiry the cert is withdrawn rather than served stale.
        tokio::time::sleep(Duration::from_secs(1300)).await;
        assert!(rx.borrow().is_none(), "expired cert withdrawn");
        assert_eq!(metrics.cert_expiry_seconds.get(), 0);

        // The CA comes back: within the maximum backoff a cert is back.
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(rx.borrow().is_some(), "recovered after the outage");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        task.abort();
    }
}
