use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_e2e::load::{LoadSpec, run};

/// Fixed-rate HTTP load for the e2e suite and the demo; prints a JSON report.
#[derive(Debug, Parser)]
#[command(name = "mesh-load", version, about)]
struct Cli {
    /// URL to request; its host is sent as `Host`.
    url: hyper::Uri,
    /// Connect here instead of the URL's host.
    #[arg(long)]
    via: Option<SocketAddr>,
    /// Extra header `name:value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Requests per second (0: as fast as possible).
    #[arg(long, default_value_t = 100)]
    rps: u32,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Number of requests.
    #[arg(long, short = 'n', default_value_t = 100)]
    requests: u64,
    /// JSON pointer whose value is counted per reply.
    #[arg(long, default_value = "/version")]
    group_by: String,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut headers = Vec::new();
    for h in &cli.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} must be name:value"))?;
        headers.push((k.trim().parse()?, v.trim().parse()?));
    }
    let report = run(LoadSpec {
        url: cli.url,
        via: cli.via,
        headers,
        rps: cli.rps,
        concurrency: cli.concurrency,
        requests: cli.requests,
        group_by: cli.group_by,
        timeout: Duration::from_millis(cli.timeout_ms),
    })
    .await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
