use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_control::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = mesh_control::config::Config::parse();
    let _running = mesh_control::server::start(&config).await?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    Ok(())
}
