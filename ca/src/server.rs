//! Serving the CA over TLS (`mesh-ca serve`). The serving certificate is
//! issued from the CA's own signer, with DNS/IP SANs, so clients verify it
//! against the same trust bundle as everything else; it renews itself at
//! half its lifetime and when the CA changes ([`crate::serving`]). Client
//! certificates are optional: a workload renewing with its current SVID is
//! authenticated by it (see [`crate::service`]).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, Stream};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::Authenticator;
use crate::authority::{AuthorityError, CertificateAuthority};
use crate::bundle::TrustBundle;
use crate::issue::IssueError;
use crate::metrics::CaMetrics;
use crate::service::CaService;
use crate::serving::{ServingCert, ServingSpec, spawn_renewal};

/// The default DNS name in the CA's serving certificate; clients dial with
/// this name as the TLS server name.
pub const DEFAULT_SERVER_NAME: &str = "mesh-ca";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The serving certificate could not be issued.
    #[error("issuing the CA's serving certificate failed: {0}")]
    ServingCert(#[from] IssueError),
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The CA could not be loaded.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A server task panicked or was cancelled.
    #[error("CA server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The listening socket could not be shared with a restarted server.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The renewing serving certificate could not be issued.
    #[error(transparent)]
    Serving(crate::serving::ServingError),
    /// rustls refused the server configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// How the CA serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// DNS SANs of the serving certificate.
    pub dns_names: Vec<String>,
    /// IP SANs of the serving certificate.
    pub ips: Vec<IpAddr>,
    /// Lifetime of the serving certificate (capped by the signer's).
    pub serving_ttl: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            dns_names: vec![DEFAULT_SERVER_NAME.to_string(), "localhost".to_string()],
            ips: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            serving_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// TLS settings for serving `ca`: a fresh serving certificate, and optional
/// client certificates verified against the trust bundle.
pub fn tls_config(
    ca: &CertificateAuthority,
    opts: &ServeOptions,
) -> Result<ServerTlsConfig, ServerError> {
    let serving = ca.issue_serving_cert(&opts.dns_names, &opts.ips, opts.serving_ttl)?;
    let identity = Identity::from_pem(serving.cert.chain_pem.concat(), serving.key_pem);
    Ok(ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(ca.trust_bundle().pem()))
        .client_auth_optional(true))
}

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls server configuration presenting `cert` (renewed in place, see
/// [`crate::serving`]) and optionally verifying client certificates against
/// `bundle`, with ALPN `h2` for gRPC.
pub fn rustls_config(
    cert: Arc<ServingCert>,
    bundle: &TrustBundle,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(bundle.root_store()),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ServerError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

type Handshake = BoxFuture<'static, Option<TlsStream<TcpStream>>>;

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`: handshakes run concurrently (a slow client does
/// not hold up the others) and a failed or timed-out one is logged and
/// skipped. Each connection is a `tokio_rustls` server stream, for which
/// tonic records the client's certificate chain (`Request::peer_certs`,
/// what the CA's renewals and xDS over mTLS check).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    let pending: FuturesUnordered<Handshake> = FuturesUnordered::new();
    futures_util::stream::unfold(
        (listener, acceptor, pending),
        |(listener, acceptor, mut pending)| async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, peer)) => {
                            let _ = tcp.set_nodelay(true);
                            let handshake = acceptor.accept(tcp);
                            pending.push(Box::pin(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(tls)) => Some(tls),
                                    Ok(Err(error)) => {
                                        tracing::debug!(%peer, %error, "TLS handshake failed");
                                        None
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        None
                                    }
                                }
                            }));
                        }
                        Err(error) => {
                            // E.g. out of file descriptors: back off briefly.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        if let Some(tls) = done {
                            return Some((Ok(tls), (listener, acceptor, pending)));
                        }
                    }
                }
            }
        },
    )
}

/// Serves gRPC over TLS on `listener`, one server *generation* per CA that
/// `cas` announces.
///
/// The serving certificate is a [`ServingCert`] renewed in place by
/// [`spawn_renewal`] (at half its lifetime, and when the CA changes), so a
/// renewal only changes what new handshakes get. A new CA additionally needs
/// new services (they hold the CA) and new client roots, so `router` builds
/// the services for it and a new server starts on the same socket before
/// the old one is shut down gracefully: it stops accepting, streams in
/// flight (long-lived xDS streams too) go on until they end, and its
/// HTTP/2 connections get a GOAWAY, so clients open their next streams on
/// the new server. Choosing this over a single server with a swappable
/// service keeps the services immutable; a CA change is rare, renewals are
/// not, and renewals never restart anything.
pub async fn serve_generations<F>(
    listener: std::net::TcpListener,
    mut cas: watch::Receiver<Arc<CertificateAuthority>>,
    opts: &ServeOptions,
    router: F,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError>
where
    F: Fn(Arc<CertificateAuthority>) -> Router,
{
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let local = listener.local_addr().ok();
    let spec = ServingSpec {
        dns_names: opts.dns_names.clone(),
        ips: opts.ips.clone(),
        ttl: opts.serving_ttl,
    };
    let first = cas.borrow_and_update().clone();
    let cert = ServingCert::issue(&first, &spec).map_err(ServerError::Serving)?;
    let renewal = AbortOnDrop(spawn_renewal(cert.clone(), spec, cas.clone()));
    let start = |ca: Arc<CertificateAuthority>| -> Result<_, ServerError> {
        let socket = listener.try_clone().map_err(ServerError::Listener)?;
        let socket = TcpListener::from_std(socket).map_err(ServerError::Listener)?;
        let config = rustls_config(cert.clone(), ca.trust_bundle())?;
        tracing::info!(addr = ?local, trust_domain = %ca.trust_domain(), roots = ca.trust_bundle().roots().len(), "CA serving");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = router(ca).serve_with_incoming_shutdown(tls_incoming(socket, config), async {
            let _ = stopped.await;
        });
        Ok((stop, tokio::spawn(server)))
    };
    let (mut stop, mut task) = start(first)?;
    tokio::pin!(shutdown);
    let mut cas_open = true;
    let result = loop {
        tokio::select! {
            finished = &mut task => break finished.map_err(ServerError::from).and_then(|r| r.map_err(ServerError::from)),
            () = &mut shutdown => {
                let _ = stop.send(());
                break task.await.map_err(ServerError::from).and_then(|r| r.map_err(ServerError::from));
            }
            changed = cas.changed(), if cas_open => {
                if changed.is_err() {
                    // No new CA can come: serve this one until shutdown.
                    cas_open = false;
                    continue;
                }
                let ca = cas.borrow_and_update().clone();
                let (new_stop, new_task) = start(ca)?;
                let old_stop = std::mem::replace(&mut stop, new_stop);
                let old_task = std::mem::replace(&mut task, new_task);
                let _ = old_stop.send(());
                tokio::spawn(async move {
                    if let Ok(Err(error)) = old_task.await {
                        tracing::warn!(%error, "previous CA server ended with an error");
                    }
                });
            }
        }
    };
    drop(renewal);
    result
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the CA on `listener` until `shutdown` completes, renewing its
/// serving certificate at half its lifetime.
pub async fn serve(
    ca: Arc<CertificateAuthority>,
    auth: Authenticator,
    metrics: CaMetrics,
    listener: TcpListener,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listener = listener.into_std().map_err(ServerError::Listener)?;
    let (_keep, cas) = watch::channel(ca);
    serve_generations(
        listener,
        cas,
        opts,
        |ca| {
            let service = CaService::new(ca, auth.clone(), metrics.clone()).into_server();
            Server::builder().add_service(service)
        },
        shutdown,
    )
    .await
}

/// Serves like [`serve`], and each time `reload` yields, loads the CA again
/// with `load` and starts a new server generation (new serving certificate,
/// new client roots, see [`serve_generations`]) on the same socket, so a
/// root rotation or replaced `cacerts` files take effect without closing
/// the port. A failed reload is logged and the running server kept.
pub async fn serve_with_reload<L>(
    load: L,
    auth: Authenticator,
    metrics: CaMetrics,
    listener: std::net::TcpListener,
    opts: ServeOptions,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError>
where
    L: Fn() -> Result<Arc<CertificateAuthority>, AuthorityError>,
{
    let (cas_tx, cas) = watch::channel(load()?);
    let serving = serve_generations(
        listener,
        cas,
        &opts,
        |ca| {
            let service = CaService::new(ca, auth.clone(), metrics.clone()).into_server();
            Server::builder().add_service(service)
        },
        shutdown,
    );
    tokio::pin!(serving);
    let mut reloads_open = true;
    loop {
        tokio::select! {
            done = &mut serving => return done,
            signal = reload.recv(), if reloads_open => {
                if signal.is_none() {
                    reloads_open = false;
                    continue;
                }
                match load() {
                    Ok(ca) => {
                        tracing::info!(roots = ca.trust_bundle().roots().len(), "CA reloaded");
                        cas_tx.send_replace(ca);
                    }
                    Err(error) => {
                        tracing::error!(%error, "CA reload failed; still serving the previous CA");
                    }
                }
            }
        }
    }
}
