//! Standalone interception tool, the same code as `mesh-proxy init` (as
//! Istio ships `istio-iptables` beside `pilot-agent`): for CNI plugins, init
//! containers built from other images, and tests.

use clap::Parser;
use mesh_intercept::{InitArgs, run_init};

/// Writes (or prints, or removes) the mesh's transparent interception rules
/// in the current network namespace.
#[derive(Debug, Parser)]
#[command(name = "mesh-intercept", version, about)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

fn main() {
    let cli = Cli::parse();
    match run_init(&cli.init) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("mesh-intercept: {e}");
            std::process::exit(1);
        }
    }
}
