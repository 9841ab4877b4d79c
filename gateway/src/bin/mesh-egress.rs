use clap::Parser;

/// mesh-egress: the mesh's egress gateway (not built yet: it arrives with the
/// gateways wave; this binary only reserves the name and flags).
#[derive(Debug, Parser)]
#[command(name = "mesh-egress", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("mesh-egress is not implemented yet: gateways arrive in a later wave")
}
