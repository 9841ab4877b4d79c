//! `mesh-proxy run`: wires the xDS client, the listeners, the admin,
//! health and Prometheus ports and the SIGTERM drain together.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::{self, Role};
use crate::runtime::{Shared, WorkloadInfo};
use crate::xds::{NodeIdentity, XdsClient, XdsClientConfig, XdsMode};

/// Everything `run` needs, parsed from flags by the binary.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// xDS settings.
    pub xds: XdsClientConfig,
    /// Address the admin port binds (127.0.0.1: admin is local only).
    pub admin: SocketAddr,
    /// Health port address.
    pub health: SocketAddr,
    /// Prometheus port address.
    pub prometheus: SocketAddr,
    /// Merged (proxy + app) metrics port address (Istio's status port).
    pub status: SocketAddr,
    /// The app's probes served under `/app-health/...` on the health port.
    pub app_probers: crate::app_probe::AppProbers,
    /// Where the app's own metrics are, for the merged metrics.
    pub app_metrics: Option<crate::health::AppMetrics>,
    /// Port for `virtualOutbound`.
    pub outbound_port: u16,
    /// Port for `virtualInbound`.
    pub inbound_port: u16,
    /// How long SIGTERM waits for open connections.
    pub drain_timeout: Duration,
    /// SPIFFE ID of this workload (metric labels).
    pub principal: String,
    /// Where to get this workload's SVID; without it mTLS chains and
    /// clusters fail closed.
    pub identity: Option<mesh_ca::client::CaClientConfig>,
    /// An SVID loaded from files (`--cert-dir`), used when no CA is set.
    pub static_svid: Option<std::sync::Arc<crate::tls::Svid>>,
}

impl AgentConfig {
    /// Defaults with Istio's ports for a node identity.
    pub fn new(address: impl Into<String>, node: NodeIdentity, mode: XdsMode) -> Self {
        let local = IpAddr::from([127, 0, 0, 1]);
        let any = IpAddr::from([0, 0, 0, 0]);
        let mut xds = XdsClientConfig::new(address, node);
        xds.mode = mode;
        Self {
            xds,
            admin: SocketAddr::new(local, 15000),
            health: SocketAddr::new(any, 15021),
            prometheus: SocketAddr::new(any, 15090),
            status: SocketAddr::new(any, 15020),
            app_probers: Default::default(),
            app_metrics: None,
            outbound_port: 15001,
            inbound_port: 15006,
            drain_timeout: Duration::from_secs(5),
            principal: "unknown".into(),
            identity: None,
            static_svid: None,
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A port could not be bound.
    #[error("cannot bind {what} on {address}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the SIGTERM handler failed.
    #[error("cannot install the SIGTERM handler")]
    Signal(#[source] std::io::Error),
}

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| AgentError::Bind {
            what,
            address,
            source,
        })
}

/// Runs the proxy until SIGTERM (or Ctrl-C, or `/quitquitquit`), then
/// drains. `log_control` backs the admin `/logging` endpoint.
pub async fn run(
    cfg: AgentConfig,
    log_control: Option<crate::runtime::LogControl>,
) -> Result<(), AgentError> {
    let workload = WorkloadInfo {
        workload: cfg.xds.node.workload_name.clone(),
        principal: cfg.principal.clone(),
    };
    let (svid_tx, svid_rx) = tokio::sync::watch::channel(None);
    let mut xds = cfg.xds.clone();
    // xDS over mTLS (`--xds-address https://...`) presents this SVID.
    xds.svid.get_or_insert_with(|| svid_rx.clone());
    let (client, rx) = XdsClient::new(xds);
    let shared = Shared::with_svid(rx, workload, svid_rx);
    shared.peer_metadata.set_local(&cfg.xds.node);
    match cfg.identity.clone() {
        Some(ca) => {
            info!(ca = %ca.endpoint, spiffe_id = %ca.spiffe_id, "requesting the workload certificate");
            shared
                .svid_required
                .store(true, std::sync::atomic::Ordering::Relaxed);
            crate::identity::spawn(ca, &shared.metrics, svid_tx);
        }
        None => match cfg.static_svid.clone() {
            Some(svid) => {
                info!("using the SVID from --cert-dir (no rotation)");
                svid_tx.send_replace(Some(svid));
            }
            None => {
                warn!("no CA configured (--ca-address): mTLS listeners and clusters fail closed")
            }
        },
    }
    if let Some(ctl) = log_control {
        let _ = shared.log_control.set(ctl);
    }
    let admin = bind("admin", cfg.admin).await?;
    let health = bind("health", cfg.health).await?;
    let prom = bind("prometheus", cfg.prometheus).await?;
    let bootstrap = std::sync::Arc::new(crate::config_dump::BootstrapDump::of(&cfg));
    tokio::spawn(admin::serve_with(
        admin,
        Role::Admin,
        shared.clone(),
        Some(bootstrap),
    ));
    tokio::spawn(crate::health::serve_health(
        health,
        shared.clone(),
        std::sync::Arc::new(cfg.app_probers.clone()),
    ));
    // Not fatal: several proxies on one host (explicit mode, tests) would
    // otherwise collide on 15020; only the merged metrics are lost.
    match bind("status", cfg.status).await {
        Ok(status) => {
            tokio::spawn(crate::health::serve_merged(
                status,
                shared.clone(),
                cfg.app_metrics.clone(),
            ));
        }
        Err(error) => warn!(%error, "merged metrics (proxy + app) are not served"),
    }
    tokio::spawn(admin::serve(prom, Role::Prometheus, shared.clone()));
    info!(address = %cfg.xds.address, node = %cfg.xds.node.node_id(), "connecting to the control plane");
    tokio::spawn(client.run());
    let overrides = BTreeMap::from([
        ("virtualOutbound".to_owned(), cfg.outbound_port),
        ("virtualInbound".to_owned(), cfg.inbound_port),
    ]);
    tokio::spawn(crate::listener::run(shared.clone(), overrides));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signal)?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: draining"),
        _ = shared.quit.notified() => info!("/quitquitquit: draining"),
    }
    let left = shared.drain(cfg.drain_timeout).await;
    if left > 0 {
        warn!(connections = left, timeout = ?cfg.drain_timeout, "drain timeout passed; closing remaining connections");
    } else {
        info!("drained");
    }
    Ok(())
}
