//! `meshctl bootstrap envoy`: an Envoy v3 bootstrap pointing at meshd, with
//! the node metadata of docs/xds.md, an ADS cluster (HTTP/2), LDS/CDS over
//! ADS, an admin listener and, with `--cert-dir`, the static secrets
//! `default` and `ROOTCA` that mTLS clusters and listeners refer to.

use std::path::PathBuf;

use anyhow::bail;
use serde_json::{Value, json};

use crate::resources::Output;

/// Flags of `meshctl bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which proxy to bootstrap (only `envoy` for now).
    pub proxy: String,
    /// `node.id`; default `sidecar~<ip>~<workload>.<namespace>~<namespace>.svc.cluster.local`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// `node.cluster` (istioctl's CLUSTER column); default the service name.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Namespace of the workload.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Service account of the workload.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Workload name; default the service name.
    #[arg(long)]
    pub workload_name: Option<String>,
    /// Labels, `k=v,k=v`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// The service this workload serves (auto-registers it in meshd).
    #[arg(long)]
    pub service_name: Option<String>,
    /// Its ports, `http:8080,tcp:5432`.
    #[arg(long, default_value = "")]
    pub service_ports: String,
    /// The workload's IP.
    #[arg(long, default_value = "127.0.0.1")]
    pub instance_ip: String,
    /// meshd's xDS address, `host:port`.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_address: String,
    /// Envoy's admin port (on 127.0.0.1); 0 picks one.
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    /// Directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// `REDIRECT` (iptables capture), `TPROXY` or `NONE` (explicit mode).
    #[arg(long, default_value = "REDIRECT")]
    pub interception_mode: String,
    /// Explicit mode: the loopback port of the HTTP proxy listener.
    #[arg(long)]
    pub outbound_port: Option<u16>,
    /// Use incremental (delta) xDS instead of state-of-the-world.
    #[arg(long)]
    pub delta: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: Output,
}

/// Runs `meshctl bootstrap`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let doc = render(&args)?;
    match args.output {
        Output::Json | Output::Table => println!("{}", serde_json::to_string_pretty(&doc)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&doc)?),
    }
    Ok(0)
}

/// Builds the bootstrap document.
pub fn render(args: &Args) -> anyhow::Result<Value> {
    if args.proxy != "envoy" {
        bail!(
            "only `meshctl bootstrap envoy` is supported (got {:?})",
            args.proxy
        );
    }
    let mode = args.interception_mode.to_ascii_uppercase();
    if !matches!(mode.as_str(), "REDIRECT" | "TPROXY" | "NONE") {
        bail!("--interception-mode must be REDIRECT, TPROXY or NONE");
    }
    let Some((xds_host, xds_port)) = args.xds_address.rsplit_once(':') else {
        bail!("--xds-address must be host:port, e.g. 127.0.0.1:15010");
    };
    let xds_port: u16 = xds_port
        .parse()
        .map_err(|_| anyhow::anyhow!("bad port in --xds-address {:?}", args.xds_address))?;
    let service = args.service_name.clone().unwrap_or_default();
    let workload = args.workload_name.clone().unwrap_or_else(|| {
        if service.is_empty() {
            "workload".into()
        } else {
            service.clone()
        }
    });
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        format!(
            "sidecar~{}~{workload}.{ns}~{ns}.svc.cluster.local",
            args.instance_ip,
            ns = args.namespace
        )
    });
    let mut labels = serde_json::Map::new();
    for kv in args.labels.split(',').filter(|s| !s.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--labels takes k=v pairs separated by commas, got {kv:?}");
        };
        labels.insert(k.trim().into(), v.trim().into());
    }
    let mut metadata = json!({
        "NAMESPACE": args.namespace,
        "SERVICE_ACCOUNT": args.service_account,
        "WORKLOAD_NAME": workload,
        "LABELS": labels,
        "INSTANCE_IPS": args.instance_ip,
        "CLUSTER_ID": "Kubernetes",
        "INTERCEPTION_MODE": mode,
    });
    if !service.is_empty() {
        metadata["MESH_SERVICE_NAME"] = service.clone().into();
    }
    if !args.service_ports.is_empty() {
        metadata["MESH_SERVICE_PORTS"] = args.service_ports.clone().into();
    }
    if let Some(p) = args.outbound_port {
        metadata["MESH_OUTBOUND_PORT"] = p.to_string().into();
    }
    let api_type = if args.delta { "DELTA_GRPC" } else { "GRPC" };
    let is_ip = xds_host.parse::<std::net::IpAddr>().is_ok();
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    let mut static_resources = json!({
        "clusters": [{
            "name": "xds-grpc",
            "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
            "connect_timeout": "5s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {
                "cluster_name": "xds-grpc",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": xds_host, "port_value": xds_port}
                }}}]}]
            }
        }]
    });
    if let Some(dir) = &args.cert_dir {
        let f = |name: &str| dir.join(name).display().to_string();
        static_resources["secrets"] = json!([
            {"name": "default", "tls_certificate": {
                "certificate_chain": {"filename": f("cert-chain.pem")},
                "private_key": {"filename": f("key.pem")}
            }},
            {"name": "ROOTCA", "validation_context": {
                "trusted_ca": {"filename": f("root-cert.pem")}
            }}
        ]);
    }
    Ok(json!({
        "node": {
            "id": node_id,
            "cluster": args.cluster.clone().unwrap_or_else(|| if service.is_empty() { workload.clone() } else { service.clone() }),
            "metadata": metadata,
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": static_resources,
    }))
}
