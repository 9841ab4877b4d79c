//! `meshctl bootstrap envoy`: an Envoy bootstrap pointing at meshd.

/// Flags of `meshctl bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which proxy to bootstrap (only `envoy` for now).
    pub proxy: String,
}

/// Runs `meshctl bootstrap`.
pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("meshctl bootstrap is not implemented yet")
}
