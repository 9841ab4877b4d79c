//! `meshctl inject`: Kubernetes workload YAML in, injected YAML out. Uses
//! the same library as meshd's mutating webhook.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use mesh_inject::{InjectConfig, inject_documents};

/// Flags of `meshctl inject`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File of Deployments/StatefulSets/DaemonSets/Jobs/CronJobs/Pods (YAML
    /// or JSON); `-` reads stdin. Other kinds pass through unchanged.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Run the proxy as a native sidecar (init container with
    /// `restartPolicy: Always`, Kubernetes 1.29+).
    #[arg(long)]
    pub native_sidecar: bool,
    /// Proxy image.
    #[arg(long)]
    pub image: Option<String>,
    /// meshd's xDS address as seen from pods (default
    /// `http://meshd.mesh-system.svc:15010`).
    #[arg(long)]
    pub xds_address: Option<String>,
    /// The CA's address as seen from pods (default
    /// `https://meshd.mesh-system.svc:15012`).
    #[arg(long)]
    pub ca_address: Option<String>,
    /// SPIFFE trust domain.
    #[arg(long)]
    pub trust_domain: Option<String>,
}

/// Runs `meshctl inject`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let (text, source) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        (s, "-".to_string())
    } else {
        let s = std::fs::read_to_string(&args.file).with_context(|| {
            format!("reading {} (pass -f - to read stdin)", args.file.display())
        })?;
        (s, args.file.display().to_string())
    };
    let mut cfg = InjectConfig {
        native_sidecar: args.native_sidecar,
        ..InjectConfig::default()
    };
    if let Some(image) = args.image {
        cfg.proxy_image = image;
    }
    if let Some(addr) = args.xds_address {
        cfg.xds_address = addr;
    }
    if let Some(addr) = args.ca_address {
        cfg.ca_address = addr;
    }
    if let Some(td) = args.trust_domain {
        cfg.trust_domain = td;
    }
    let out = inject_documents(&text, &source, &cfg)?;
    print!("{out}");
    Ok(0)
}
