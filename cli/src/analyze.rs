//! `meshctl analyze`: validation and cross-resource analysis of config files.

use std::path::PathBuf;

/// Flags of `meshctl analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of YAML/JSON to analyze.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs `meshctl analyze`.
pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl analyze is not implemented yet")
}
