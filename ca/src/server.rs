//! Serving the CA over TLS (`mesh-ca serve`). The serving certificate is
//! issued at start from the CA's own signer, with DNS/IP SANs, so clients
//! verify it against the same trust bundle as everything else. Client
//! certificates are optional: a workload renewing with its current SVID is
//! authenticated by it (see [`crate::service`]).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::Authenticator;
use crate::authority::{AuthorityError, CertificateAuthority};
use crate::issue::IssueError;
use crate::metrics::CaMetrics;
use crate::service::CaService;

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

/// Serves the CA on `listener` until `shutdown` completes.
pub async fn serve(
    ca: Arc<CertificateAuthority>,
    auth: Authenticator,
    metrics: CaMetrics,
    listener: TcpListener,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let tls = tls_config(&ca, opts)?;
    let local = listener.local_addr().ok();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(addr = ?local, trust_domain = %ca.trust_domain(), "CA serving");
    let service = CaService::new(ca, auth, metrics).into_server();
    Server::builder()
        .tls_config(tls)?
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Serves like [`serve`], and each time `reload` yields, loads the CA again
/// with `load` and starts a new server (new serving certificate, new client
/// roots) on the same socket before draining the old one, so a root
/// rotation or replaced `cacerts` files take effect without closing the
/// port. A failed reload is logged and the running server kept.
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
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let start = |ca: Arc<CertificateAuthority>| -> Result<_, ServerError> {
        let socket = listener.try_clone().map_err(ServerError::Listener)?;
        let socket = TcpListener::from_std(socket).map_err(ServerError::Listener)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (auth, metrics, opts) = (auth.clone(), metrics.clone(), opts.clone());
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(ca, auth, metrics, socket, &opts, shutdown).await
        });
        Ok((stop, task))
    };
    let (mut stop, mut task) = start(load()?)?;
    tokio::pin!(shutdown);
    let mut reloads_open = true;
    loop {
        tokio::select! {
            finished = &mut task => {
                return finished?;
            }
            () = &mut shutdown => {
                let _ = stop.send(());
                return task.await?;
            }
            signal = reload.recv(), if reloads_open => {
                if signal.is_none() {
                    // Nobody can ask for reloads any more: serve until
                    // shutdown.
                    reloads_open = false;
                    continue;
                }
                let ca = match load() {
                    Ok(ca) => ca,
                    Err(error) => {
                        tracing::error!(%error, "CA reload failed; still serving the previous CA");
                        continue;
                    }
                };
                tracing::info!(roots = ca.trust_bundle().roots().len(), "CA reloaded");
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
    }
}
