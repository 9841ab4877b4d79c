//! `mesh-proxy`: parses flags (or environment) and calls the library.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mesh_proxy::agent::{AgentConfig, run};
use mesh_proxy::xds::{NodeIdentity, XdsMode};

/// mesh-proxy: the mesh's sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar.
    Run(Box<RunArgs>),
    /// Write (or print with --dry-run, or remove with --cleanup) the
    /// iptables interception rules in the current network namespace.
    Init(mesh_intercept::InitArgs),
    /// Ask the local proxy to stop accepting and wait until its connections
    /// close (the injected preStop hook).
    Drain(DrainArgs),
}

#[derive(Debug, clap::Args)]
struct DrainArgs {
    /// The proxy's admin port (127.0.0.1).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 15000)]
    admin_port: u16,
    /// Seconds to wait for open connections to close.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = 5)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Incremental ADS.
    Delta,
    /// State-of-the-world ADS.
    Sotw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
enum Interception {
    /// iptables REDIRECT.
    #[value(name = "REDIRECT", alias = "redirect")]
    REDIRECT,
    /// iptables TPROXY.
    #[value(name = "TPROXY", alias = "tproxy")]
    TPROXY,
    /// No interception (explicit mode).
    #[value(name = "NONE", alias = "none")]
    NONE,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Control plane xDS address.
    #[arg(long, env = "XDS_ADDRESS", default_value = "http://127.0.0.1:15010")]
    xds_address: String,
    /// ADS variant.
    #[arg(long, env = "XDS_MODE", value_enum, default_value_t = Mode::Delta)]
    xds_mode: Mode,
    /// Node id (derived Istio-style when empty).
    #[arg(long, env = "NODE_ID", default_value = "")]
    node_id: String,
    /// Namespace of the workload.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Service account of the workload.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// Workload name.
    #[arg(long, env = "WORKLOAD_NAME", default_value = "")]
    workload_name: String,
    /// Labels, `k=v,k2=v2`.
    #[arg(long, env = "LABELS", default_value = "")]
    labels: String,
    /// Downward-API labels file (`key="value"` per line); read at start and
    /// merged over `--labels`.
    #[arg(long, env = "LABELS_PATH")]
    labels_path: Option<std::path::PathBuf>,
    /// Service name.
    #[arg(long, env = "SERVICE_NAME", default_value = "")]
    service_name: String,
    /// Service ports, `http:9080,tcp:3306`.
    #[arg(long, env = "SERVICE_PORTS", default_value = "")]
    service_ports: String,
    /// Instance IP(s), comma separated.
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: String,
    /// Cluster id.
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// Locality `region/zone/subzone` (sent as `node.locality`).
    #[arg(long, env = "LOCALITY", default_value = "")]
    locality: String,
    /// Interception mode.
    #[arg(long, env = "INTERCEPTION_MODE", value_enum, default_value_t = Interception::REDIRECT)]
    interception_mode: Interception,
    /// Admin port (127.0.0.1 only).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 15000)]
    admin_port: u16,
    /// Outbound capture port.
    #[arg(long, env = "OUTBOUND_PORT", default_value_t = 15001)]
    outbound_port: u16,
    /// Inbound capture port.
    #[arg(long, env = "INBOUND_PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// Explicit mode: the app's port on 127.0.0.1 (default: the first
    /// --service-ports port). See docs/xds.md, "Explicit mode".
    #[arg(long, env = "APP_PORT")]
    app_port: Option<u16>,
    /// Health port.
    #[arg(long, env = "HEALTH_PORT", default_value_t = 15021)]
    health_port: u16,
    /// Prometheus port.
    #[arg(long, env = "PROMETHEUS_PORT", default_value_t = 15090)]
    prometheus_port: u16,
    /// Merged (proxy + app) metrics port, Istio's status port.
    #[arg(long, env = "STATUS_PORT", default_value_t = 15020)]
    status_port: u16,
    /// The app's probes as injection rewrote them (JSON, path → probe).
    #[arg(long, env = "MESH_KUBE_APP_PROBERS", default_value = "")]
    app_probers: String,
    /// The app's own `prometheus.io/*` annotations as JSON
    /// (`{"scrape":"true","port":"9090","path":"/metrics"}`), merged on the status port.
    #[arg(long, env = "MESH_PROMETHEUS_ANNOTATIONS", default_value = "")]
    app_metrics: String,
    /// Seconds SIGTERM waits for open connections.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = 5)]
    drain_timeout: u64,
    /// The CA's URL, e.g. `https://127.0.0.1:15012`: the proxy gets and renews its SVID there.
    #[arg(long, env = "CA_ADDRESS")]
    ca_address: Option<String>,
    /// Join token for the CA (from `mesh-ca token create`).
    #[arg(long, env = "JOIN_TOKEN")]
    join_token: Option<String>,
    /// Service-account token file for the CA (re-read on each request).
    #[arg(long, env = "TOKEN_PATH")]
    token_path: Option<String>,
    /// Trust domain.
    /// PEM root the CA's serving certificate chains to.
    #[arg(long, env = "CA_ROOT_CERT")]
    ca_root_cert: Option<String>,
    /// Name to verify in the CA's serving certificate.
    #[arg(long, env = "CA_SERVER_NAME", default_value = "mesh-ca")]
    ca_server_name: String,
    /// Requested SVID lifetime in seconds (default: the CA's).
    #[arg(long, env = "SVID_TTL")]
    svid_ttl: Option<u64>,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`: a
    /// fixed SVID instead of the CA (loaded once, not rotated).
    #[arg(long, env = "CERT_DIR", conflicts_with = "ca_address")]
    cert_dir: Option<std::path::PathBuf>,
    /// Worker threads of the data path (Istio's `--concurrency`).
    #[arg(long, env = "CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// `LOG_FORMAT=json` for JSON logs.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    s.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("--labels: {kv:?} is not k=v"))
        })
        .collect()
}

/// The pod labels in a downward-API file. A missing file is not an error
/// (the volume may be absent outside Kubernetes): the proxy runs without them.
fn read_labels_file(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => mesh_proxy::labels::parse(&text)
            .with_context(|| format!("--labels-path {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "mesh-proxy: --labels-path {} does not exist; no pod labels",
                path.display()
            );
            Ok(BTreeMap::new())
        }
        Err(e) => Err(e).with_context(|| format!("reading --labels-path {}", path.display())),
    }
}

/// The CA client's settings, when `--ca-address` is given.
fn identity(
    args: &RunArgs,
    spiffe_id: mesh_ca::SpiffeId,
) -> anyhow::Result<Option<mesh_ca::client::CaClientConfig>> {
    let Some(endpoint) = args.ca_address.clone() else {
        anyhow::ensure!(
            args.join_token.is_none() && args.token_path.is_none(),
            "--join-token/--token-path need --ca-address (where the CA listens)"
        );
        return Ok(None);
    };
    let root_path = args.ca_root_cert.as_deref().context(
        "--ca-address needs --ca-root-cert (the PEM root the CA's serving certificate chains to)",
    )?;
    let ca_roots_pem = std::fs::read_to_string(root_path)
        .with_context(|| format!("reading --ca-root-cert {root_path}"))?;
    let credential = match (&args.join_token, &args.token_path) {
        (Some(token), None) => mesh_ca::client::Credential::JoinToken(token.clone()),
        (None, Some(path)) => mesh_ca::client::Credential::TokenFile(path.into()),
        _ => anyhow::bail!(
            "--ca-address needs exactly one credential: --join-token (from `mesh-ca token create`) or --token-path (a service-account token file)"
        ),
    };
    Ok(Some(mesh_ca::client::CaClientConfig {
        endpoint,
        ca_roots_pem,
        server_name: args.ca_server_name.clone(),
        credential,
        spiffe_id,
        ttl: args.svid_ttl.map(Duration::from_secs),
    }))
}

fn init_tracing(json: bool) -> mesh_proxy::runtime::LogControl {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json()).init();
    } else {
        registry.with(fmt::layer()).init();
    }
    mesh_proxy::runtime::LogControl(Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

/// The C library's `pow`, defined in the binary from the `libm` crate (a
/// port of musl's). Its only callers are `f64::powf` in dependencies
/// (tokio's multi-thread scheduler statistics); with it defined here the
/// linker drops the system `libm.so.6` (linked `--as-needed`), whose
/// mapped pages were about 0.5 MB of the idle sidecar's resident set (see
/// docs/performance.md, "Idle RSS").
// `no_mangle` is what makes this the symbol `pow`; it is safe to export:
// the signature is libm's and the body has no preconditions.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn main() -> anyhow::Result<()> {
    mesh_proxy::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Init(args) => {
            print!("{}", mesh_intercept::run_init(&args)?);
            Ok(())
        }
        Command::Drain(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let left = rt.block_on(mesh_proxy::drain::drain(
                args.admin_port,
                Duration::from_secs(args.timeout),
            ))?;
            if left > 0 {
                eprintln!(
                    "mesh-proxy drain: {left} connection(s) still open after {}s",
                    args.timeout
                );
            } else {
                eprintln!("mesh-proxy drain: drained");
            }
            Ok(())
        }
        Command::Run(args) => {
            let log_control = init_tracing(args.log_format == "json");
            let mut labels = parse_labels(&args.labels)?;
            if let Some(path) = &args.labels_path {
                labels.extend(read_labels_file(path)?);
            }
            let node = NodeIdentity {
                id: args.node_id.clone(),
                namespace: args.namespace.clone(),
                service_account: args.service_account.clone(),
                workload_name: args.workload_name.clone(),
                labels,
                instance_ips: args.instance_ip.split(',').map(str::to_owned).collect(),
                cluster_id: args.cluster_id.clone(),
                locality: args.locality.clone(),
                service_name: args.service_name.clone(),
                service_ports: args.service_ports.clone(),
                interception_mode: format!("{:?}", args.interception_mode),
                ..Default::default()
            };
            let node = if matches!(args.interception_mode, Interception::NONE) {
                // Explicit mode: meshd binds the listeners at these ports.
                NodeIdentity {
                    outbound_port: Some(args.outbound_port),
                    inbound_port: Some(args.inbound_port),
                    app_port: args.app_port,
                    ..node
                }
            } else {
                node
            };
            let mode = match args.xds_mode {
                Mode::Delta => XdsMode::Delta,
                Mode::Sotw => XdsMode::Sotw,
            };
            let mut cfg = AgentConfig::new(args.xds_address.clone(), node, mode);
            cfg.admin.set_port(args.admin_port);
            cfg.health.set_port(args.health_port);
            cfg.prometheus.set_port(args.prometheus_port);
            cfg.status.set_port(args.status_port);
            cfg.app_probers = mesh_proxy::app_probe::AppProbers::parse(&args.app_probers)?;
            cfg.app_metrics =
                mesh_proxy::health::AppMetrics::from_annotations(&args.app_metrics)
                    .context("MESH_PROMETHEUS_ANNOTATIONS / --app-metrics must be JSON")?;
            cfg.outbound_port = args.outbound_port;
            cfg.inbound_port = args.inbound_port;
            cfg.drain_timeout = Duration::from_secs(args.drain_timeout);
            let spiffe_id =
                mesh_ca::SpiffeId::new(&args.trust_domain, &args.namespace, &args.service_account)
                    .context(
                        "--trust-domain, --namespace and --service-account must form a SPIFFE ID",
                    )?;
            cfg.principal = spiffe_id.to_string();
            cfg.identity = identity(&args, spiffe_id)?;
            if let Some(dir) = &args.cert_dir {
                let svid = mesh_proxy::cert_files::load(dir)
                    .with_context(|| format!("--cert-dir {}", dir.display()))?;
                cfg.static_svid = Some(std::sync::Arc::new(svid));
            }
            // One worker: a current-thread runtime (no worker thread beside
            // the main one, no cross-thread wake-ups).
            let rt = if args.concurrency == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.concurrency.into())
                    .enable_all()
                    .build()?
            };
            rt.block_on(async {
                tokio::spawn(mesh_proxy::runtime::anchor_timers());
                run(cfg, Some(log_control)).await
            })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_gives_libm_results() {
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(10.0, 8.0), 1e8);
        assert_eq!(pow(0.9, 2.5), 0.7684334714209162);
        assert_eq!(pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(pow(1.5, -3.2), 0.27321715895754894);
        assert_eq!(pow(f64::NAN, 0.0), 1.0);
        assert!(pow(-8.0, 0.5).is_nan());
        assert_eq!(pow(0.0, -1.0), f64::INFINITY);
    }

    #[test]
    fn interception_mode_takes_istio_spelling_and_labels_parse() {
        let cli = Cli::try_parse_from([
            "mesh-proxy",
            "run",
            "--interception-mode",
            "NONE",
            "--labels",
            "app=r,version=v1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert!(matches!(args.interception_mode, Interception::NONE));
        assert_eq!(parse_labels(&args.labels).unwrap()["version"], "v1");
        assert!(
            Cli::try_parse_from(["mesh-proxy", "run", "--interception-mode", "tproxy"]).is_ok()
        );
        assert!(parse_labels("novalue").is_err());
    }

    #[test]
    fn concurrency_defaults_to_two_workers_and_refuses_zero() {
        let Command::Run(args) = Cli::try_parse_from(["mesh-proxy", "run"]).unwrap().command else {
            panic!("run expected")
        };
        assert_eq!(args.concurrency, 2);
        let Command::Run(args) = Cli::try_parse_from(["mesh-proxy", "run", "--concurrency", "1"])
            .unwrap()
            .command
        else {
            panic!("run expected")
        };
        assert_eq!(args.concurrency, 1);
        assert!(Cli::try_parse_from(["mesh-proxy", "run", "--concurrency", "0"]).is_err());
        assert!(
            Cli::try_parse_from([
                "mesh-proxy",
                "run",
                "--cert-dir",
                "/x",
                "--ca-address",
                "https://a"
            ])
            .is_err()
        );
    }
}
