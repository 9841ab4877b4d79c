//! `meshctl completion SHELL`: shell completion scripts, e.g.
//! `source <(meshctl completion bash)`.

use clap::CommandFactory;
use clap_complete::Shell;

/// Flags of `meshctl completion`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    pub shell: Shell,
}

/// Prints the completion script on stdout.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "meshctl", &mut std::io::stdout());
    Ok(0)
}
