use clap::Parser;

/// Demo application for the book-shop demo, tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "mesh-demo-app", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
