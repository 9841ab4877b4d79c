//! meshd's command-line flags (parsed in `main.rs`, used by [`crate::server`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// meshd: the mesh's control plane.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "meshd", version, about)]
pub struct Config {
    /// Where the SQLite database lives. Default: `$XDG_DATA_HOME/mesh`, else
    /// `~/.local/share/mesh`.
    #[arg(long, env = "MESHD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve config from this directory of YAML files (read-only) instead of
    /// the SQLite store. VIPs are still kept in the data dir.
    #[arg(long, env = "MESHD_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// xDS (ADS, plaintext gRPC) listen address.
    #[arg(long, default_value = "127.0.0.1:15010", env = "MESHD_XDS_ADDR")]
    pub xds_addr: SocketAddr,
    /// Management API, debug endpoints and metrics (HTTP) listen address.
    #[arg(long, default_value = "127.0.0.1:15014", env = "MESHD_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// How long config changes are collected before one push.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// How long an auto-registered workload stays (unhealthy) after its
    /// proxy's stream drops.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub workload_grace: Duration,
    /// Where the embedded CA serves (gRPC over TLS; proxies get their SVIDs
    /// there with a join token or, on Kubernetes, their service-account
    /// token). `--xds-tls-addr` is the same flag (Istio's port 15012).
    #[arg(
        long,
        alias = "xds-tls-addr",
        default_value = "127.0.0.1:15012",
        env = "MESHD_CA_ADDR"
    )]
    pub ca_addr: SocketAddr,
    /// The CA's directory (Istio `cacerts` layout; a plug-in CA is used as
    /// is); created with a new root when empty. Default: `<data-dir>/ca`.
    #[arg(long, env = "MESHD_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// SPIFFE trust domain of a CA created here.
    #[arg(long, default_value = "cluster.local", env = "MESHD_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// Kubernetes mode: config from the mesh's CRDs, the registry from
    /// Services/EndpointSlices/Pods, the CA's root in a Secret, the webhooks
    /// served; the API server is found in-cluster or from the kubeconfig.
    #[arg(long, env = "MESHD_KUBERNETES")]
    pub kubernetes: bool,
    /// Kubernetes mode: where the admission webhooks serve (HTTPS).
    #[arg(long, default_value = "127.0.0.1:15017", env = "MESHD_WEBHOOK_ADDR")]
    pub webhook_addr: SocketAddr,
    /// Kubernetes mode: the mounted `mesh-config` ConfigMap (files
    /// `trustDomain`, `rootCertConfigMap`); its values override the flags.
    #[arg(long, env = "MESHD_MESH_CONFIG_DIR")]
    pub mesh_config_dir: Option<PathBuf>,
    /// Kubernetes mode: the cluster's DNS domain (service hosts are
    /// `<name>.<namespace>.svc.<domain>`).
    #[arg(long, default_value = "cluster.local", env = "MESHD_CLUSTER_DOMAIN")]
    pub cluster_domain: String,
    /// Kubernetes mode: meshd's own namespace (its Lease, CA Secret and
    /// Service live there).
    #[arg(long, default_value = "mesh-system", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Kubernetes mode: this replica's name, the leader election identity.
    /// Default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

impl Config {
    /// The CA directory, resolving the default.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("ca"))
    }

    /// The data directory, resolving the default.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("mesh");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/mesh")
    }
}

/// Parses `100ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    }
}
