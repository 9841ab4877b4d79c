//! `meshctl apply|get|delete`: resources in meshd's store.

use std::path::PathBuf;

/// Flags of `meshctl apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Files or directories of YAML/JSON to apply.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// Flags of `meshctl get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Resource kind, e.g. `virtualservice` or `vs`.
    pub kind: String,
    /// Resource name; all of the kind when omitted.
    pub name: Option<String>,
}

/// Flags of `meshctl delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Resource kind, e.g. `virtualservice` or `vs`.
    pub kind: String,
    /// Resource name.
    pub name: String,
}

/// Runs `meshctl apply`.
pub async fn apply(_args: ApplyArgs) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl apply is not implemented yet")
}

/// Runs `meshctl get`.
pub async fn get(_args: GetArgs) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl get is not implemented yet")
}

/// Runs `meshctl delete`.
pub async fn delete(_args: DeleteArgs) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl delete is not implemented yet")
}
