//! `meshctl install`: installs the mesh on the current Kubernetes cluster.
//! Today only `--dry-run` works (it prints what `meshctl manifest generate`
//! prints); applying with server-side apply and waiting for meshd is not
//! implemented yet, and the command says how to do it with kubectl.

use crate::manifest::{GenerateArgs, generate_yaml};

/// Flags of `meshctl install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile, values and namespace, as for `meshctl manifest generate`.
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print the objects instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `meshctl install`; exit code 2 when asked to apply (not implemented).
pub fn run(args: Args) -> anyhow::Result<i32> {
    let yaml = generate_yaml(&args.generate)?;
    if args.dry_run {
        print!("{yaml}");
        return Ok(0);
    }
    let mut cmd = format!(
        "meshctl manifest generate --profile {} -n {}",
        args.generate.profile.as_str(),
        args.generate.namespace
    );
    for s in &args.generate.set {
        cmd.push_str(&format!(" --set {s}"));
    }
    eprintln!(
        "error: meshctl install cannot apply to a cluster yet (server-side apply and the readiness wait are not implemented).\n\
         Apply the same objects with kubectl:\n  {cmd} | kubectl apply --server-side -f -\n\
         or look at them with: meshctl install --dry-run ..."
    );
    Ok(2)
}
