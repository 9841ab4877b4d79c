use clap::Parser;

/// meshctl: install, inspect and operate the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
