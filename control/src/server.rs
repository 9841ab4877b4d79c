//! Starts meshd's components and wires them together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Workloads;
use crate::snapshot::SnapshotBuilder;
use crate::state::Shared;
use crate::store::{ConfigStore, FilesStore, SqliteStore};
use crate::vip::VipAllocator;
use crate::xds::status::SyncStatus;
use crate::xds::{AdsService, XdsState};

/// Errors starting meshd.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("opening the config store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The embedded CA could not be loaded or created.
    #[error("the embedded CA (--ca-dir): {0}")]
    Ca(#[from] mesh_ca::authority::AuthorityError),
    /// Kubernetes mode (`--kubernetes`) could not start.
    #[error("Kubernetes mode: {0}")]
    Kube(#[from] crate::kube::KubeError),
    /// The CA's join-token key could not be loaded or created.
    #[error("the embedded CA's join tokens (--ca-dir): {0}")]
    JoinTokens(#[from] mesh_ca::token::TokenError),
    /// A listen address could not be bound.
    #[error(
        "binding {addr}: {source} (is another meshd running? pick another address with --{flag})"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which flag sets it.
        flag: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running meshd (its tasks stop when this is dropped).
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API/debug server listens.
    pub http_addr: SocketAddr,
    /// Where the xDS server listens.
    pub xds_addr: SocketAddr,
    /// Where the embedded CA listens.
    pub ca_addr: SocketAddr,
    /// Where the admission webhooks listen (Kubernetes mode only).
    pub webhook_addr: Option<SocketAddr>,
    /// Shared handles (store, registry, ...).
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind(
    addr: SocketAddr,
    flag: &'static str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Bind { addr, flag, source };
    let l = TcpListener::bind(addr).await.map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

/// The embedded CA (the same library as `mesh-ca`): loads or creates the
/// root in `--ca-dir` and serves SVIDs to proxies presenting a join token
/// (`mesh-ca token create --dir <ca-dir>`) or, to renew, their current SVID.
async fn start_ca(
    config: &Config,
    shared: &Shared,
    kube: Option<&crate::kube::KubeMode>,
    xds: Arc<XdsState>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(SocketAddr, CaWatch), StartError> {
    use mesh_ca::auth::Authenticator;
    use mesh_ca::server::ServeOptions;
    let dir = config.ca_dir();
    if let Some(k) = kube {
        k.prepare_ca(&dir).await?;
    }
    let ca = Arc::new(mesh_ca::CertificateAuthority::load_or_init(
        &dir,
        &config.trust_domain,
        mesh_ca::IssuePolicy::default(),
    )?);
    publish_ca(shared, &ca);
    let tokens = Arc::new(mesh_ca::token::JoinTokens::load_or_create(&dir)?);
    let mut auth = Authenticator::default().with_join_tokens(tokens);
    if let Some(k) = kube {
        auth = auth.with_kubernetes(k.token_reviewer());
    }
    let (listener, ca_addr) = bind(config.ca_addr, "ca-addr").await?;
    let mut opts = ServeOptions::default();
    if !ca_addr.ip().is_unspecified() && !opts.ips.contains(&ca_addr.ip()) {
        opts.ips.push(ca_addr.ip());
    }
    if let Some(k) = kube {
        // Injected proxies call https://meshd.<ns>.svc:15012.
        opts.dns_names.extend(k.service_names());
    }
    // `mesh-ca rotate-root --dir <ca-dir>` (or replaced files) reaches the
    // servers, the serving certificates and the bundle publishers through
    // this watch, without a restart.
    let (cas_tx, cas) = tokio::sync::watch::channel(ca);
    tasks.push(mesh_ca::reload::spawn_dir_watch(
        dir.clone(),
        config.trust_domain.clone(),
        mesh_ca::IssuePolicy::default(),
        cas_tx,
        mesh_ca::reload::DEFAULT_CHECK_INTERVAL,
    ));
    if let Some(k) = kube {
        // A replaced `cacerts` Secret reaches the directory, then the watch.
        tasks.push(crate::kube::ca::spawn_secret_sync(
            k.client.clone(),
            k.namespace.clone(),
            dir.clone(),
            crate::kube::ca::SECRET_RESYNC,
        ));
    }
    // /debug/ca and the root-expiry metric follow the CA as it changes.
    let mut followed = cas.clone();
    let followed_shared = shared.clone();
    tasks.push(tokio::spawn(async move {
        while followed.changed().await.is_ok() {
            let ca = followed.borrow_and_update().clone();
            publish_ca(&followed_shared, &ca);
        }
    }));
    let served = cas.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = serve_tls(cas, auth, xds, listener, &opts).await {
            tracing::error!(error = %e, "CA and xDS-over-mTLS server stopped");
        }
    }));
    tracing::info!(%ca_addr, ca_dir = %dir.display(), "CA and xDS over mTLS listening");
    Ok((ca_addr, served))
}

/// Makes `ca` what `/debug/ca` shows and what
/// `mesh_ca_root_cert_expiry_timestamp` reports (the newest root's expiry).
fn publish_ca(shared: &Shared, ca: &mesh_ca::CertificateAuthority) {
    let info = crate::ca_info::CaInfo::of(ca);
    let root_expiry = info
        .roots
        .iter()
        .filter_map(|der| crate::ca_info::root_info(der))
        .map(|root| root.not_after)
        .max();
    if let Some(expiry) = root_expiry {
        shared.metrics.ca_root_expiry.set(expiry);
    }
    *shared
        .ca
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(info));
}

/// The embedded CA as it is now and as it changes.
type CaWatch = tokio::sync::watch::Receiver<Arc<mesh_ca::CertificateAuthority>>;

/// The TLS port (15012, as Istio's): the CA, and ADS for clients that
/// present an SVID chained to the mesh root (optional: a client without a
/// certificate is served like on the plaintext port; one whose SPIFFE ID
/// does not match its node metadata is refused, see
/// [`crate::xds::authorize`]).
///
/// Served by [`mesh_ca::server::serve_generations`]: the serving
/// certificate renews in place at half its lifetime (new handshakes get it,
/// open xDS streams are untouched), and a new CA from `cas` starts a new
/// server on the same socket with services holding that CA while the old
/// one drains, which keeps the services immutable. Connections are
/// `tokio-rustls` streams, so `Request::peer_certs` still gives the xDS
/// mTLS check the client's chain.
async fn serve_tls(
    cas: CaWatch,
    auth: mesh_ca::auth::Authenticator,
    xds: Arc<XdsState>,
    listener: tokio::net::TcpListener,
    opts: &mesh_ca::server::ServeOptions,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let metrics = xds.metrics.ca.clone();
    let listener = listener.into_std()?;
    let router = |ca: Arc<mesh_ca::CertificateAuthority>| {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(
                mesh_ca::service::CaService::new(ca, auth.clone(), metrics.clone()).into_server(),
            )
            .add_service(AdsService::new(xds.clone()).into_server())
    };
    mesh_ca::server::serve_generations(listener, cas, opts, router, std::future::pending()).await?;
    Ok(())
}

/// Opens the stores, binds the listeners and spawns every task.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let kube = if config.kubernetes {
        Some(crate::kube::KubeMode::connect(config).await?)
    } else {
        None
    };
    start_with_kube(config, kube).await
}

/// [`start`] with Kubernetes mode's client given (tests pass one over a
/// scripted API server); `None` runs off Kubernetes.
pub async fn start_with_kube(
    config: &Config,
    kube: Option<crate::kube::KubeMode>,
) -> Result<Running, StartError> {
    let mut tasks = Vec::new();
    // The mounted mesh config may set the trust domain.
    let mut adjusted = config.clone();
    if let Some(k) = &kube {
        adjusted.trust_domain = k.trust_domain.clone();
    }
    let config = &adjusted;
    // SQLite always opens: it holds the VIPs even when config comes from files.
    let sqlite = SqliteStore::open(&config.data_dir()).await?;
    let vips = VipAllocator::load(Some(sqlite.pool().clone())).await?;
    let store: Arc<dyn ConfigStore> = match (&kube, &config.config_dir) {
        (Some(k), _) => Arc::new(k.config_store(&mut tasks).await),
        (None, Some(dir)) => {
            let files = FilesStore::open(dir)?;
            tasks.push(files.spawn_poller());
            Arc::new(files)
        }
        (None, None) => Arc::new(sqlite),
    };
    tracing::info!(store = %store.describe(), "config store open");
    let workloads = Arc::new(Workloads::new(config.workload_grace));
    if let Some(k) = &kube {
        k.start_registry(workloads.clone(), &mut tasks).await;
    }
    let builder = SnapshotBuilder::new(store.clone(), workloads.clone(), vips);
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(SyncStatus::default());
    builder.rebuild().await?;
    tasks.push(tokio::spawn(builder.clone().run(config.debounce)));
    let reaper = workloads.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            reaper.reap(std::time::Instant::now());
        }
    }));
    let shared = Arc::new(Shared {
        store,
        builder: builder.clone(),
        workloads: workloads.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        ca: Default::default(),
    });

    let (xds, xds_addr) = bind(config.xds_addr, "xds-addr").await?;
    let xds_state = XdsState::new(builder, workloads, status, metrics);
    let ads = AdsService::new(xds_state.clone());
    tasks.push(tokio::spawn(async move {
        // Without TCP_NODELAY, a response's last small frame can wait for
        // the client's delayed ACK (Nagle).
        let incoming = tonic::transport::server::TcpIncoming::from(xds).with_nodelay(Some(true));
        let res = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads.into_server())
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "xDS server stopped");
        }
    }));
    tracing::info!(%xds_addr, "xDS (ADS) listening");

    let (http, http_addr) = bind(config.http_addr, "http-addr").await?;
    tasks.push(tokio::spawn(crate::http::serve(http, shared.clone())));
    tracing::info!(%http_addr, "management API and debug endpoints listening");

    let (ca_addr, ca) = start_ca(config, &shared, kube.as_ref(), xds_state, &mut tasks).await?;
    let webhook_addr = match &kube {
        Some(k) => Some(k.start_with_ca(ca, &mut tasks).await?.webhook_addr),
        None => None,
    };
    Ok(Running {
        http_addr,
        xds_addr,
        ca_addr,
        webhook_addr,
        shared,
        tasks,
    })
}
