//! The xDS client: one ADS stream to the control plane (delta by default,
//! state-of-the-world on request), CDS and LDS first, then EDS and RDS for
//! the names they refer to. Every accepted response publishes a new
//! immutable [`ProxyConfig`] through a `watch` channel; a rejected resource
//! is NACKed with its error and the last good version keeps serving.

mod delta;
pub mod node;
mod resources;
mod sotw;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

pub use node::NodeIdentity;
pub use resources::ResourceType;

use crate::config::ProxyConfig;

/// Which ADS variant to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsMode {
    /// Incremental (delta) ADS.
    Delta,
    /// State-of-the-world ADS.
    Sotw,
}

/// Settings of the xDS client.
#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// Control plane URL, e.g. `http://127.0.0.1:15010`.
    pub address: String,
    /// Node identity.
    pub node: NodeIdentity,
    /// Delta or SotW.
    pub mode: XdsMode,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// The proxy's SVID, presented to the control plane when `address` is
    /// `https://...` (xDS over mTLS, meshd's 15012); the server is verified
    /// against the SVID's trust roots under the name `mesh-ca`.
    pub svid: Option<crate::tls::SvidReceiver>,
}

impl XdsClientConfig {
    /// Defaults: delta ADS, reconnect backoff 100 ms doubling to 15 s.
    pub fn new(address: impl Into<String>, node: NodeIdentity) -> Self {
        Self {
            address: address.into(),
            node,
            mode: XdsMode::Delta,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            svid: None,
        }
    }
}

/// Why one ADS stream ended.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The control plane address is not a valid URI.
    #[error("invalid xDS address {address:?}")]
    Address {
        /// The address given.
        address: String,
        /// The parse error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the control plane")]
    Connect(#[source] tonic::transport::Error),
    /// xDS over TLS needs the proxy's SVID, and none was issued in time.
    #[error(
        "xDS over mTLS (https://) needs the workload certificate; none yet (is --ca-address set?)"
    )]
    NoSvid,
    /// The SVID could not be turned into TLS settings.
    #[error("TLS settings for the control plane")]
    Tls(#[source] tonic::transport::Error),
    /// The stream failed with a gRPC status.
    #[error("ADS stream failed")]
    Stream(#[source] tonic::Status),
    /// The control plane closed the stream.
    #[error("control plane closed the ADS stream")]
    Closed,
}

/// The xDS client. Create it with [`XdsClient::new`], hand the receiver to
/// the data path, then run [`XdsClient::run`].
#[derive(Debug)]
pub struct XdsClient {
    config: XdsClientConfig,
    tx: watch::Sender<Arc<ProxyConfig>>,
}

impl XdsClient {
    /// A client and the receiver of its config snapshots (empty until the
    /// first response).
    pub fn new(config: XdsClientConfig) -> (Self, watch::Receiver<Arc<ProxyConfig>>) {
        let (tx, rx) = watch::channel(Arc::new(ProxyConfig::default()));
        (Self { config, tx }, rx)
    }

    /// Runs streams forever, reconnecting with exponential backoff. The
    /// config survives reconnects: the proxy keeps serving it, and a delta
    /// stream tells the server which versions it has.
    pub async fn run(self) {
        let mut backoff = self.config.initial_backoff;
        loop {
            let mut progressed = false;
            let result = match self.config.mode {
                XdsMode::Delta => delta::run_stream(&self.config, &self.tx, &mut progressed).await,
                XdsMode::Sotw => sotw::run_stream(&self.config, &self.tx, &mut progressed).await,
            };
            if progressed {
                backoff = self.config.initial_backoff;
            }
            match result {
                Ok(()) => info!(address = %self.config.address, "ADS stream ended; reconnecting"),
                Err(error) => {
                    warn!(address = %self.config.address, error = %error_chain(&error), ?backoff, "ADS stream failed; reconnecting")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The NACK detail for a list of per-resource errors.
fn error_detail(errors: &[String]) -> Option<mesh_proto::envoy::pb::google::rpc::Status> {
    (!errors.is_empty()).then(|| mesh_proto::envoy::pb::google::rpc::Status {
        // INVALID_ARGUMENT, as Envoy reports rejected config.
        code: 3,
        message: errors.join("; "),
        details: vec![],
    })
}

async fn connect(
    cfg: &XdsClientConfig,
) -> Result<
    mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient<
        tonic::transport::Channel,
    >,
    XdsError,
>{
    let endpoint =
        tonic::transport::Endpoint::from_shared(cfg.address.clone()).map_err(|source| {
            XdsError::Address {
                address: cfg.address.clone(),
                source,
            }
        })?;
    let endpoint = if cfg.address.starts_with("https://") {
        endpoint
            .tls_config(client_tls(cfg).await?)
            .map_err(XdsError::Tls)?
    } else {
        endpoint
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(XdsError::Connect)?;
    Ok(mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(channel))
}

/// TLS settings presenting the current SVID (taken at each connect, so a
/// reconnect after a rotation uses the new certificate).
async fn client_tls(cfg: &XdsClientConfig) -> Result<tonic::transport::ClientTlsConfig, XdsError> {
    use mesh_ca::pem::{cert_pem, encode};
    use rustls::pki_types::PrivateKeyDer;
    let mut rx = cfg.svid.clone().ok_or(XdsError::NoSvid)?;
    let svid = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|s| s.clone())
        .ok_or(XdsError::NoSvid)?;
    let chain: String = svid.chain.iter().map(|c| cert_pem(c)).collect();
    let roots: String = svid.roots.iter().map(|c| cert_pem(c)).collect();
    let label = match &svid.key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let key = encode(label, svid.key.secret_der());
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(roots))
        .identity(tonic::transport::Identity::from_pem(chain, key))
        .domain_name(mesh_ca::server::DEFAULT_SERVER_NAME))
}

/// What a new stream subscribes first: every wildcard type (no names), and
/// each other type with the names the current config refers to (skipped
/// when there are none yet).
fn initial_subscriptions(
    current: &ProxyConfig,
) -> Vec<(ResourceType, std::collections::BTreeSet<String>)> {
    ResourceType::ALL
        .into_iter()
        .filter_map(|ty| {
            if ty.is_wildcard() {
                return Some((ty, Default::default()));
            }
            let names = resources::wanted(current, ty);
            (!names.is_empty()).then_some((ty, names))
        })
        .collect()
}

/// Reads a stream's responses until it ends, handing each to `handle`.
async fn receive<R>(
    opened: Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>,
    progressed: &mut bool,
    mut handle: impl FnMut(R),
) -> Result<(), XdsError> {
    let mut stream = opened.map_err(XdsError::Stream)?.into_inner();
    while let Some(resp) = stream.message().await.map_err(XdsError::Stream)? {
        *progressed = true;
        handle(resp);
    }
    Ok(())
}
