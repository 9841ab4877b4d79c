//! meshctl: the mesh's command-line tool. Each subcommand lives in its own
//! module with its own clap `Args` and a `run` function; `main.rs` only
//! dispatches.

pub mod access;
pub mod analyze;
pub mod bootstrap;
pub mod check;
pub mod completion;
pub mod demo;
pub mod inject;
pub mod install;
pub mod manifest;
pub mod proxy_config;
pub mod resources;
pub mod status;
pub mod uninstall;
pub mod version;

use clap::{Parser, Subcommand};

/// meshctl: install, inspect and operate the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// meshctl's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate config files and report cross-resource problems.
    Analyze(analyze::Args),
    /// Create or update resources in meshd from YAML/JSON files.
    Apply(resources::ApplyArgs),
    /// List or show resources stored in meshd.
    Get(resources::GetArgs),
    /// Delete resources from meshd.
    Delete(resources::DeleteArgs),
    /// Show each connected proxy's xDS sync state.
    ProxyStatus(status::Args),
    /// Show a proxy's listeners, routes, clusters, endpoints, secrets or bootstrap.
    ProxyConfig(proxy_config::Args),
    /// Check the mesh's health: meshd, its CA, clocks, proxies.
    Check(check::Args),
    /// Print a bootstrap that points a proxy (a real Envoy) at meshd.
    Bootstrap(bootstrap::Args),
    /// Add the sidecar to Kubernetes workloads (YAML in, YAML out).
    Inject(inject::Args),
    /// Print the Kubernetes objects the mesh installs.
    Manifest(manifest::Args),
    /// Install the mesh on Kubernetes (server-side apply, waits for meshd).
    Install(install::Args),
    /// Remove the mesh from Kubernetes (the CRDs stay unless `--purge`).
    Uninstall(uninstall::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::Args),
    /// Print meshctl's version and meshd's.
    Version(version::Args),
    /// Run the whole mesh and a demo app on this machine (netns as root).
    Demo(demo::Args),
}

/// Runs one parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Apply(a) => resources::apply(a).await,
        Command::Get(a) => resources::get(a).await,
        Command::Delete(a) => resources::delete(a).await,
        Command::ProxyStatus(a) => status::run(a).await,
        Command::ProxyConfig(a) => proxy_config::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Bootstrap(a) => bootstrap::run(a),
        Command::Inject(a) => inject::run(a),
        Command::Manifest(a) => manifest::run(a),
        Command::Install(a) => install::run(a).await,
        Command::Uninstall(a) => uninstall::run(a).await,
        Command::Completion(a) => completion::run(a),
        Command::Version(a) => version::run(a).await,
        Command::Demo(a) => demo::run(a).await,
    }
}
