use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = mesh_cli::Cli::parse();
    let code = mesh_cli::run(cli).await?;
    std::process::exit(code);
}
