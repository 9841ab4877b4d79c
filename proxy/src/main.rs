use clap::Parser;

/// mesh-proxy: the mesh's sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    mesh_proxy::install_crypto_provider();
    let _cli = Cli::parse();
    Ok(())
}
