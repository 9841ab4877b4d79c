//! meshd's Kubernetes mode (`--kubernetes`): config from the mesh's custom
//! resources ([`crds`]), the service registry from Services, EndpointSlices,
//! Pods and Nodes ([`registry`]), leader election with a Lease ([`lease`]),
//! the CA's root in a Secret and published to every namespace ([`ca`]), and
//! the admission webhooks ([`webhook`]). The leader writes an `Accepted`
//! condition into each custom resource's status (false, with the field
//! path, for an invalid one) and a Warning Event ([`events`]) for each
//! invalid one.
//!
//! [`KubeMode`] holds the client and settings; `crate::server::start` calls
//! it at the points where the off-Kubernetes path opens the SQLite store,
//! loads the CA and so on.

pub mod ca;
pub mod crds;
pub mod events;
pub mod lease;
pub mod mesh_config;
pub mod registry;
pub mod selector;
pub mod webhook;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use mesh_model::Kind;

pub use crds::KubeStore;

use crate::config::Config;
use crate::registry::Workloads;

/// Audience of the projected service-account tokens the CA accepts (the
/// injector's default).
pub const CA_AUDIENCE: &str = "mesh-ca";

/// Errors of meshd's Kubernetes mode.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No API server configuration (neither in-cluster nor a kubeconfig).
    #[error(
        "--kubernetes: no API server configuration found (in-cluster service account or KUBECONFIG): {0}"
    )]
    Config(#[source] ::kube::Error),
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// What meshd was doing.
        what: String,
        /// The client error.
        #[source]
        source: ::kube::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA could not be created or loaded.
    #[error("the CA: {0}")]
    Ca(#[source] mesh_ca::authority::AuthorityError),
    /// The webhook serving certificate could not be issued.
    #[error("issuing the webhook serving certificate: {0}")]
    Issue(#[source] mesh_ca::issue::IssueError),
    /// The webhook serving certificate could not be used.
    #[error("the webhook serving certificate: {0}")]
    Tls(#[source] mesh_webhook::TlsError),
    /// The renewing webhook serving certificate could not be issued.
    #[error("the webhook serving certificate: {0}")]
    Serving(#[source] mesh_ca::serving::ServingError),
    /// `--webhook-addr` could not be bound.
    #[error("binding {addr} (--webhook-addr): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The client and settings of Kubernetes mode.
#[derive(Clone)]
pub struct KubeMode {
    /// The API server client.
    pub client: Client,
    /// meshd's namespace.
    pub namespace: String,
    /// This replica's identity for leader election.
    pub identity: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Name of the root-cert ConfigMap published in every namespace.
    pub root_cert_configmap: String,
    /// The sidecar image injected pods get (the mesh config's
    /// `proxyImage`; the injector's default when it names none).
    pub proxy_image: String,
    /// Where the webhooks serve.
    pub webhook_addr: SocketAddr,
    /// The config store over the custom resources.
    pub store: KubeStore,
}

impl std::fmt::Debug for KubeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeMode")
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .field("cluster_domain", &self.cluster_domain)
            .field("trust_domain", &self.trust_domain)
            .field("proxy_image", &self.proxy_image)
            .finish_non_exhaustive()
    }
}

/// What [`KubeMode::start_with_ca`] started.
#[derive(Debug)]
pub struct Started {
    /// Where the webhooks listen.
    pub webhook_addr: SocketAddr,
    /// Whether this replica leads (changes over time).
    pub leader: tokio::sync::watch::Receiver<bool>,
}

impl KubeMode {
    /// Connects with the in-cluster config, else the kubeconfig.
    pub async fn connect(config: &Config) -> Result<Self, KubeError> {
        let client = Client::try_default().await.map_err(KubeError::Config)?;
        Ok(Self::with_client(client, config))
    }

    /// Kubernetes mode over an existing client (tests pass a mock).
    pub fn with_client(client: Client, config: &Config) -> Self {
        let identity = config
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("meshd-{}", std::process::id()));
        let mc = config
            .mesh_config_dir
            .as_deref()
            .map(mesh_config::MeshConfig::read)
            .unwrap_or_default();
        let trust_domain = mc
            .trust_domain
            .unwrap_or_else(|| config.trust_domain.clone());
        let root_cert_configmap = mc
            .root_cert_configmap
            .unwrap_or_else(|| mesh_config::DEFAULT_ROOT_CERT_CONFIGMAP.into());
        let proxy_image = mc
            .proxy_image
            .unwrap_or_else(|| mesh_inject::InjectConfig::default().proxy_image);
        KubeMode {
            client,
            namespace: config.namespace.clone(),
            identity,
            cluster_domain: config.cluster_domain.clone(),
            trust_domain,
            root_cert_configmap,
            proxy_image,
            webhook_addr: config.webhook_addr,
            store: KubeStore::new(),
        }
    }

    /// Starts the custom-resource watchers and waits for every kind's
    /// initial list (logging what is still missing every 10 s), so the first
    /// snapshot is complete.
    pub async fn config_store(&self, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> KubeStore {
        let store = self.store.clone();
        tasks.extend(store.spawn(&self.client));
        loop {
            let wait = store.wait_synced(&Kind::ALL);
            if tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .is_ok()
            {
                break;
            }
            let missing: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| !store.is_synced(&[**k]))
                .map(|k| k.as_str())
                .collect();
            tracing::warn!(?missing, "waiting for the initial list of custom resources");
        }
        tracing::info!("custom resources listed");
        store
    }

    /// Starts the Kubernetes registry feeding `workloads` and waits until
    /// it has listed everything (logging every 10 s while it has not), so
    /// proxies never get a snapshot without the cluster's services.
    pub async fn start_registry(
        &self,
        workloads: Arc<Workloads>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> registry::Registry {
        let (reg, t) = registry::spawn_with_config(
            &self.client,
            self.cluster_domain.clone(),
            workloads,
            Some(Arc::new(self.store.clone())),
        );
        tasks.extend(t);
        let mut ready = reg.ready.clone();
        loop {
            let wait = ready.wait_for(|r| *r);
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(_) => break,
                Err(_) => tracing::warn!(
                    "waiting for the initial list of Services, EndpointSlices, Pods and Nodes"
                ),
            }
        }
        reg
    }

    /// Puts the cluster's CA into `dir` (see [`ca::materialize`]).
    pub async fn prepare_ca(&self, dir: &Path) -> Result<ca::CaSource, KubeError> {
        ca::materialize(&self.client, &self.namespace, dir, &self.trust_domain).await
    }

    /// DNS names of meshd's Service (`meshd.<ns>.svc` and the rest), the
    /// SANs of its serving certificates on 15012 and 15017.
    pub fn service_names(&self) -> Vec<String> {
        webhook::serving_names(&self.namespace, &self.cluster_domain)
    }

    /// The TokenReview authenticator for proxies' projected tokens.
    pub fn token_reviewer(&self) -> mesh_ca::auth::KubeAuthenticator {
        mesh_ca::auth::KubeAuthenticator::new(
            self.client.clone(),
            vec![CA_AUDIENCE.to_string()],
            &self.trust_domain,
        )
    }

    /// The injector's settings for this installation.
    pub fn inject_config(&self) -> mesh_inject::InjectConfig {
        mesh_inject::InjectConfig {
            proxy_image: self.proxy_image.clone(),
            xds_address: format!("http://meshd.{}.svc:15010", self.namespace),
            ca_address: format!("https://meshd.{}.svc:15012", self.namespace),
            ca_audience: CA_AUDIENCE.into(),
            trust_domain: self.trust_domain.clone(),
            root_cert_configmap: self.root_cert_configmap.clone(),
            ..Default::default()
        }
    }

    /// Once the CA is loaded: leader election, the leader's writers (root
    /// ConfigMaps, webhook caBundles, both following the CA's trust bundle
    /// as `cas` announces new CAs) and the webhook server (its certificate
    /// renewed from the current CA).
    pub async fn start_with_ca(
        &self,
        cas: tokio::sync::watch::Receiver<Arc<mesh_ca::CertificateAuthority>>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<Started, KubeError> {
        let (leader, t) = lease::spawn(
            self.client.clone(),
            lease::LeaseConfig::new(&self.namespace, &self.identity),
        );
        tasks.push(t);
        let (bundles, t) = webhook::bundle_pems(cas.clone());
        tasks.push(t);
        tasks.push(ca::spawn_root_publisher(
            self.client.clone(),
            self.root_cert_configmap.clone(),
            bundles.clone(),
            leader.clone(),
        ));
        tasks.push(
            self.store
                .spawn_status_writer(self.client.clone(), leader.clone()),
        );
        tasks.push(webhook::spawn_ca_bundle_patcher(
            self.client.clone(),
            bundles,
            leader.clone(),
        ));
        let (tls, renewal) = webhook::serving_tls(cas, &self.service_names())?;
        tasks.push(renewal);
        let addr = self.webhook_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| KubeError::Bind { addr, source })?;
        let webhook_addr = listener
            .local_addr()
            .map_err(|source| KubeError::Bind { addr, source })?;
        let state = mesh_webhook::WebhookState {
            inject: self.inject_config(),
            metrics: Default::default(),
        };
        tasks.push(tokio::spawn(mesh_webhook::serve(
            listener,
            tls,
            state,
            std::future::pending(),
        )));
        tracing::info!(%webhook_addr, proxy_image = %self.proxy_image, "admission webhooks listening (HTTPS)");
        Ok(Started {
            webhook_addr,
            leader,
        })
    }
}
