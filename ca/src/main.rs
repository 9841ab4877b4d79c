use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use mesh_ca::auth::{Authenticator, KubeAuthenticator};
use mesh_ca::metrics::{CaMetrics, serve_metrics};
use mesh_ca::server::{ServeOptions, serve_with_reload};
use mesh_ca::token::JoinTokens;
use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, KeyAlgorithm, SpiffeId};

/// Standalone SPIFFE certificate authority for the mesh.
#[derive(Debug, Parser)]
#[command(name = "mesh-ca", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Default SVID lifetime (e.g. 24h, 90m, 3600s, 7d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    default_ttl: Duration,
    /// Longest SVID lifetime granted, whatever is requested.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    max_ttl: Duration,
}

impl PolicyArgs {
    fn policy(&self) -> IssuePolicy {
        IssuePolicy {
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            ..IssuePolicy::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA (self-signed root, optionally an intermediate) in DIR.
    Init {
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Directory to create the CA in (Istio cacerts layout).
        #[arg(long)]
        out: PathBuf,
        /// Key algorithm of the root and intermediate.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: KeyType,
        /// Sign with an intermediate instead of the root.
        #[arg(long)]
        intermediate: bool,
        /// Root lifetime.
        #[arg(long, default_value = "3650d", value_parser = parse_duration)]
        root_ttl: Duration,
    },
    /// Root rotation. Without flags: step 1, a new root is added to the trust
    /// bundle (signing unchanged). `--activate`: step 2, the new root signs;
    /// the old root stays trusted until it expires. `--immediate`: both.
    RotateRoot {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Step 2: switch signing to the prepared root.
        #[arg(long, conflicts_with = "immediate")]
        activate: bool,
        /// Both steps at once.
        #[arg(long)]
        immediate: bool,
    },
    /// Serve the CA gRPC API over TLS.
    Serve {
        /// The CA directory (Istio cacerts layout; plug-in CAs work as is).
        #[arg(long)]
        dir: PathBuf,
        /// Trust domain, when DIR has no `trust-domain` file (plugged-in CA).
        #[arg(long)]
        trust_domain: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:15012")]
        listen: SocketAddr,
        /// DNS names in the serving certificate (repeatable).
        #[arg(long = "dns-name", default_values = ["mesh-ca", "localhost"])]
        dns_names: Vec<String>,
        /// IP addresses in the serving certificate (repeatable).
        #[arg(long = "ip", default_values = ["127.0.0.1", "::1"])]
        ips: Vec<IpAddr>,
        /// Also accept Kubernetes service-account tokens (TokenReview).
        #[arg(long)]
        kubernetes: bool,
        /// Audiences a service-account token must carry (repeatable).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Where to serve Prometheus metrics (`GET /metrics`); off if unset.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Issue an SVID offline (key generated here) into OUT.
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The identity, spiffe://<td>/ns/<ns>/sa/<sa>.
        #[arg(long)]
        spiffe_id: SpiffeId,
        /// Where to write cert.pem, cert-chain.pem, key.pem, root-cert.pem.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime (default: the CA's default).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print the trust bundle.
    Bundle {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// PEM roots or the SPIFFE bundle (JWK set).
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token for a SPIFFE ID (printed on stdout).
    Create {
        /// The CA directory (holds the token key).
        #[arg(long)]
        dir: PathBuf,
        /// The identity the token grants.
        #[arg(long)]
        spiffe_id: SpiffeId,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// The token works once (a proxy then renews with its SVID over mTLS).
        #[arg(long)]
        single_use: bool,
    },
}

/// Parses `90s`, `15m`, `24h`, `7d`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

fn write(dir: &Path, name: &str, content: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_ca::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Init {
            trust_domain,
            out,
            key_type,
            intermediate,
            root_ttl,
        } => {
            let mut opts = InitOptions::new(&trust_domain);
            opts.key_algorithm = match key_type {
                KeyType::EcdsaP256 => KeyAlgorithm::EcdsaP256,
                KeyType::EcdsaP384 => KeyAlgorithm::EcdsaP384,
                KeyType::Rsa2048 => KeyAlgorithm::Rsa2048,
                KeyType::Rsa4096 => KeyAlgorithm::Rsa4096,
            };
            opts.intermediate = intermediate;
            opts.root_ttl = root_ttl;
            let ca = CertificateAuthority::init(&out, &opts, IssuePolicy::default())?;
            JoinTokens::load_or_create(&out)?;
            println!(
                "CA for trust domain {} created in {} (root expires {})",
                ca.trust_domain(),
                out.display(),
                ca.signer_not_after()
            );
        }
        Command::RotateRoot {
            dir,
            activate,
            immediate,
        } => {
            let policy = IssuePolicy::default();
            let (ca, what) = if activate {
                let ca = CertificateAuthority::activate_root_rotation(&dir, policy)?;
                (ca, "rotation activated: new SVIDs chain to the new root")
            } else if immediate {
                let ca = CertificateAuthority::rotate_root(&dir, policy)?;
                (ca, "root rotated: new SVIDs chain to the new root")
            } else {
                let ca = CertificateAuthority::prepare_root_rotation(&dir, policy)?;
                (
                    ca,
                    "rotation prepared: the new root is in the trust bundle; run `mesh-ca rotate-root --activate` once workloads have renewed",
                )
            };
            println!(
                "{}: {what}; {} roots trusted (send SIGHUP to a running `mesh-ca serve`)",
                dir.display(),
                ca.trust_bundle().roots().len()
            );
        }
        Command::Serve {
            dir,
            trust_domain,
            listen,
            dns_names,
            ips,
            kubernetes,
            audiences,
            metrics_listen,
            policy,
        } => {
            let load = {
                let (dir, td, policy) = (dir.clone(), trust_domain.clone(), policy.policy());
                move || CertificateAuthority::load(&dir, td.as_deref(), policy).map(Arc::new)
            };
            let ca = load()?;
            let mut auth = Authenticator::default()
                .with_join_tokens(Arc::new(JoinTokens::load_or_create(&dir)?));
            if kubernetes {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to Kubernetes for TokenReview")?;
                auth = auth.with_kubernetes(KubeAuthenticator::new(
                    client,
                    audiences,
                    ca.trust_domain(),
                ));
            }
            let listener =
                std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            // Printed so that a supervisor (or a test) that asked for port 0
            // learns the port.
            println!("listening on {}", listener.local_addr()?);
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = CaMetrics::register(&mut registry);
            let opts = ServeOptions {
                dns_names,
                ips,
                ..ServeOptions::default()
            };
            let registry = Arc::new(registry);
            if let Some(addr) = metrics_listen {
                let metrics_listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics address {addr}"))?;
                println!(
                    "metrics on http://{}/metrics",
                    metrics_listener.local_addr()?
                );
                let registry = registry.clone();
                tokio::spawn(async move {
                    let never = std::future::pending::<()>();
                    if let Err(error) = serve_metrics(metrics_listener, registry, never).await {
                        tracing::error!(%error, "metrics server stopped");
                    }
                });
            }
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let _ = reload_tx.send(()).await;
                    }
                });
            }
            #[cfg(not(unix))]
            drop(reload_tx);
            drop(ca);
            serve_with_reload(load, auth, metrics, listener, opts, reload_rx, shutdown).await?;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    dir,
                    spiffe_id,
                    ttl,
                    single_use,
                },
        } => {
            let ca = CertificateAuthority::load(&dir, None, IssuePolicy::default())?;
            if spiffe_id.trust_domain() != ca.trust_domain() {
                bail!(
                    "{spiffe_id} is not in the CA's trust domain {}",
                    ca.trust_domain()
                );
            }
            let tokens = JoinTokens::load_or_create(&dir)?;
            println!("{}", tokens.create(&spiffe_id, ttl, single_use));
        }
        Command::Issue {
            dir,
            spiffe_id,
            out,
            ttl,
            policy,
        } => {
            let ca = CertificateAuthority::load(&dir, None, policy.policy())?;
            let issued = ca.issue_with_new_key(&spiffe_id, ttl)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            write(&out, "cert.pem", &issued.cert.chain_pem[0])?;
            write(&out, "cert-chain.pem", &issued.cert.chain_pem.concat())?;
            write(&out, "root-cert.pem", &ca.trust_bundle().pem())?;
            mesh_ca_write_key(&out.join("key.pem"), &issued.key_pem)?;
            println!(
                "issued {spiffe_id} into {} (expires {})",
                out.display(),
                issued.cert.not_after
            );
        }
        Command::Bundle { dir, format } => {
            let ca = CertificateAuthority::load(&dir, None, IssuePolicy::default())?;
            match format {
                BundleFormat::Pem => print!("{}", ca.trust_bundle().pem()),
                BundleFormat::Spiffe => println!("{}", ca.trust_bundle().spiffe_json()),
            }
        }
    }
    Ok(())
}

/// Writes a private key readable by the owner only.
fn mesh_ca_write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
