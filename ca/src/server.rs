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
use crate::authority::CertificateAuthority;
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
