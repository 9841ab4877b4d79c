use clap::Parser;

/// Standalone SPIFFE certificate authority for the mesh.
#[derive(Debug, Parser)]
#[command(name = "mesh-ca", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    mesh_ca::install_crypto_provider();
    let _cli = Cli::parse();
    Ok(())
}
