//! TLS serving certificates that renew themselves: the CA's own port (15012
//! in meshd) and meshd's admission webhooks (15017) both present a
//! certificate the CA issues for their DNS/IP names.
//!
//! A [`ServingCert`] is a [`ResolvesServerCert`]: a rustls server built on
//! it asks it for the certificate at every handshake, so swapping the
//! certificate inside it changes what *new* handshakes get while
//! established connections keep the keys they negotiated. [`spawn_renewal`]
//! does the swapping: at half of the current certificate's lifetime, and at
//! once whenever the CA behind it changes (a root rotation or replaced
//! `cacerts`), so the served chain always ends at a root of the current
//! trust bundle. No restart, no dropped connection.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::authority::CertificateAuthority;
use crate::issue::IssueError;

/// The shortest wait between two renewals (a CA whose signer expires very
/// soon would otherwise make renewal spin).
pub const MIN_RENEWAL_WAIT: Duration = Duration::from_secs(1);
/// How long to wait before retrying a renewal that failed.
pub const RETRY_WAIT: Duration = Duration::from_secs(30);

/// Why a serving certificate could not be issued or used.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The CA refused to issue it (e.g. its signer expires).
    #[error("issuing the serving certificate: {0}")]
    Issue(#[from] IssueError),
    /// The issued certificate chain did not parse.
    #[error("the issued serving certificate does not parse: {0}")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// The issued private key did not parse or is not a supported type.
    #[error("the issued serving key cannot sign: {0}")]
    Key(String),
}

/// What a serving certificate is issued for.
#[derive(Debug, Clone)]
pub struct ServingSpec {
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Requested lifetime (capped by the CA's signer).
    pub ttl: Duration,
}

/// The certificate in use and how long it is valid from when it was issued.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    lifetime: Duration,
    not_after: OffsetDateTime,
}

/// A serving certificate that can be replaced while servers use it (see the
/// module documentation).
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Current>,
}

impl ServingCert {
    /// Issues a first certificate for `spec` from `ca`.
    pub fn issue(ca: &CertificateAuthority, spec: &ServingSpec) -> Result<Arc<Self>, ServingError> {
        Ok(Arc::new(ServingCert {
            current: RwLock::new(issue(ca, spec)?),
        }))
    }

    /// Issues a new certificate from `ca` and serves it to new handshakes
    /// from now on. Returns its lifetime.
    pub fn renew(
        &self,
        ca: &CertificateAuthority,
        spec: &ServingSpec,
    ) -> Result<Duration, ServingError> {
        let next = issue(ca, spec)?;
        let lifetime = next.lifetime;
        tracing::info!(
            names = ?spec.dns_names,
            not_after = %next.not_after,
            trust_domain = %ca.trust_domain(),
            "serving certificate renewed"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(lifetime)
    }

    /// The certificate (leaf first, then its chain) and key served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.read(|c| c.key.clone())
    }

    /// The current certificate's lifetime, counted from when it was issued.
    pub fn lifetime(&self) -> Duration {
        self.read(|c| c.lifetime)
    }

    /// The current certificate's `notAfter`.
    pub fn not_after(&self) -> OffsetDateTime {
        self.read(|c| c.not_after)
    }

    fn read<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        // A poisoned lock still holds a complete certificate: the writer
        // only assigns a fully built value.
        f(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn issue(ca: &CertificateAuthority, spec: &ServingSpec) -> Result<Current, ServingError> {
    let issued = ca.issue_serving_cert(&spec.dns_names, &spec.ips, spec.ttl)?;
    let chain = CertificateDer::pem_slice_iter(issued.cert.chain_pem.concat().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServingError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| ServingError::Key(e.to_string()))?;
    let signer = any_supported_type(&key).map_err(|e| ServingError::Key(e.to_string()))?;
    let remaining = issued.cert.not_after - OffsetDateTime::now_utc();
    let lifetime = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
    Ok(Current {
        key: Arc::new(CertifiedKey::new(chain, signer)),
        lifetime,
        not_after: issued.cert.not_after,
    })
}

/// When to renew a certificate of `lifetime`: at half of it (at least
/// [`MIN_RENEWAL_WAIT`]).
pub fn renewal_wait(lifetime: Duration) -> Duration {
    (lifetime / 2).max(MIN_RENEWAL_WAIT)
}

/// Keeps `cert` fresh: re-issues it from the current CA of `cas` at half of
/// its lifetime and whenever `cas` announces a new CA. A failed renewal is
/// logged and retried after [`RETRY_WAIT`] (the old certificate is served
/// meanwhile). When the sender of `cas` is gone, timed renewals continue
/// with the last CA. The task runs until aborted.
pub fn spawn_renewal(
    cert: Arc<ServingCert>,
    spec: ServingSpec,
    mut cas: watch::Receiver<Arc<CertificateAuthority>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = renewal_wait(cert.lifetime());
        let mut cas_open = true;
        loop {
            tokio::select! {
                changed = cas.changed(), if cas_open => {
                    if changed.is_err() {
                        cas_open = false;
                        continue;
                    }
                    tracing::info!("the CA changed; renewing the serving certificate");
                }
                () = tokio::time::sleep(wait) => {}
            }
            let ca = cas.borrow_and_update().clone();
            wait = match cert.renew(&ca, &spec) {
                Ok(lifetime) => renewal_wait(lifetime),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?RETRY_WAIT, "renewing the serving certificate failed; serving the current one");
                    RETRY_WAIT
                }
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{InitOptions, IssuePolicy};

    fn ca(dir: &std::path::Path) -> Arc<CertificateAuthority> {
        Arc::new(
            CertificateAuthority::init(
                dir,
                &InitOptions::new("example.org"),
                IssuePolicy::default(),
            )
            .unwrap(),
        )
    }

    fn spec(ttl: Duration) -> ServingSpec {
        ServingSpec {
            dns_names: vec!["mesh-ca".into()],
            ips: vec![],
            ttl,
        }
    }

    fn leaf(cert: &ServingCert) -> Vec<u8> {
        cert.current().cert[0].to_vec()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn certificate_is_renewed_at_half_its_lifetime_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let spec = spec(Duration::from_secs(600));
        let cert = ServingCert::issue(&ca, &spec).unwrap();
        let first = leaf(&cert);
        let (_tx, rx) = watch::channel(ca);
        let task = spawn_renewal(cert.clone(), spec, rx);
        settle().await;
        tokio::time::advance(Duration::from_secs(290)).await;
        settle().await;
        assert_eq!(leaf(&cert), first, "renewed before half the lifetime");
        tokio::time::advance(Duration::from_secs(20)).await;
        settle().await;
        assert_ne!(leaf(&cert), first, "not renewed after half the lifetime");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn new_ca_is_used_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = ca(&dir.path().join("old"));
        let new = ca(&dir.path().join("new"));
        let spec = spec(Duration::from_secs(3600));
        let cert = ServingCert::issue(&old, &spec).unwrap();
        let (tx, rx) = watch::channel(old);
        let task = spawn_renewal(cert.clone(), spec, rx);
        settle().await;
        tx.send(new.clone()).unwrap();
        settle().await;
        let chain = cert.current();
        let root = chain.cert.last().unwrap();
        assert_eq!(root, &new.trust_bundle().roots()[0]);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_continue_after_the_ca_sender_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let spec = spec(Duration::from_secs(100));
        let cert = ServingCert::issue(&ca, &spec).unwrap();
        let first = leaf(&cert);
        let (tx, rx) = watch::channel(ca);
        let task = spawn_renewal(cert.clone(), spec, rx);
        drop(tx);
        settle().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
        assert_ne!(leaf(&cert), first);
        task.abort();
    }

    /// A TLS echo server on 127.0.0.1 presenting `cert`.
    async fn echo_server(cert: Arc<ServingCert>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(cert);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn connect(addr: std::net::SocketAddr, ca: &CertificateAuthority) -> Client {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.trust_bundle().root_store())
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("mesh-ca").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    fn serial(tls: &Client) -> Vec<u8> {
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
        parsed.raw_serial().to_vec()
    }

    async fn echo(tls: &mut Client, msg: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tls.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn fresh_clients_get_the_renewed_certificate_while_open_connections_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        // rcgen works in whole seconds: 2 s renews after about 1 s.
        let spec = spec(Duration::from_secs(2));
        let cert = ServingCert::issue(&ca, &spec).unwrap();
        let addr = echo_server(cert.clone()).await;
        let mut before = connect(addr, &ca).await;
        let first = serial(&before);
        let (_tx, rx) = watch::channel(ca.clone());
        let task = spawn_renewal(cert, spec, rx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let renewed = loop {
            let fresh = connect(addr, &ca).await;
            if serial(&fresh) != first {
                break fresh;
            }
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(serial(&renewed), first);
        assert_eq!(echo(&mut before, b"still here").await, b"still here");
        assert_eq!(serial(&before), first);
        task.abort();
    }

    #[test]
    fn renewal_wait_is_half_the_lifetime_and_at_least_a_second() {
        assert_eq!(
            renewal_wait(Duration::from_secs(3600)),
            Duration::from_secs(1800)
        );
        assert_eq!(renewal_wait(Duration::ZERO), MIN_RENEWAL_WAIT);
    }
}
