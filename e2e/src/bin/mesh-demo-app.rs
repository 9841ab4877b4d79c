use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_e2e::demo::{DemoConfig, Upstream, serve};

/// Demo application for the book-shop demo, tests and benchmarks: answers
/// JSON naming its service, version and caller, after calling its upstreams.
#[derive(Debug, Parser)]
#[command(name = "mesh-demo-app", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9080", env = "DEMO_LISTEN")]
    listen: SocketAddr,
    /// Service name to report.
    #[arg(long, env = "DEMO_SERVICE")]
    service: String,
    /// Version to report (the `version` label of the workload).
    #[arg(long = "service-version", default_value = "v1", env = "DEMO_VERSION")]
    service_version: String,
    /// Milliseconds to wait before answering.
    #[arg(long, default_value_t = 0, env = "DEMO_LATENCY_MS")]
    latency_ms: u64,
    /// Probability in [0, 1] of answering 500.
    #[arg(long, default_value_t = 0.0, env = "DEMO_ERROR_RATE")]
    error_rate: f64,
    /// Bytes of padding in each reply.
    #[arg(long, default_value_t = 0, env = "DEMO_RESPONSE_SIZE")]
    response_size: usize,
    /// Upstream URL to call on every request (repeatable), e.g. http://reviews:9080/reviews.
    #[arg(long = "upstream")]
    upstreams: Vec<hyper::Uri>,
    /// Send upstream calls to this address (the sidecar's explicit outbound
    /// port) instead of the URL's host.
    #[arg(long, env = "DEMO_VIA")]
    via: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.error_rate),
        "--error-rate must be between 0 and 1, got {}",
        cli.error_rate
    );
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let config = DemoConfig {
        service: cli.service,
        version: cli.service_version,
        latency: Duration::from_millis(cli.latency_ms),
        error_rate: cli.error_rate,
        response_size: cli.response_size,
        upstreams: cli
            .upstreams
            .into_iter()
            .map(|url| Upstream { url, via: cli.via })
            .collect(),
    };
    eprintln!(
        "mesh-demo-app {} {} listening on {}",
        config.service,
        config.version,
        listener.local_addr()?
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, config, shutdown).await?;
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
