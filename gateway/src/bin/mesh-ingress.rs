use clap::Parser;

/// mesh-ingress: the mesh's ingress gateway (not built yet: it arrives with the
/// gateways wave; this binary only reserves the name and flags).
#[derive(Debug, Parser)]
#[command(name = "mesh-ingress", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("mesh-ingress is not implemented yet: gateways arrive in a later wave")
}
