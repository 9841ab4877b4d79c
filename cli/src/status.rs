//! `meshctl proxy-status`: xDS sync state of every proxy, as meshd sees it.

/// Flags of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One proxy to explain in detail.
    pub name: Option<String>,
}

/// Runs `meshctl proxy-status`.
pub async fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl proxy-status is not implemented yet")
}
