use clap::Parser;

/// meshd: the mesh's control plane.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    mesh_control::install_crypto_provider();
    let _cli = Cli::parse();
    Ok(())
}
