//! `mesh-bench`: the proxy benchmark (see docs/performance.md and
//! scripts/bench.sh, which installs the tools and builds in release mode).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_e2e::bench::load::Shape;
use mesh_e2e::bench::report::{self, Machine};
use mesh_e2e::bench::run::{self, Options};
use mesh_e2e::bench::scenario::{self, Placement};
use mesh_e2e::bench::xds::StaticAds;

/// mesh-bench: direct vs mesh-proxy pair vs Envoy pair (vs HAProxy pair).
#[derive(Debug, Parser)]
#[command(name = "mesh-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark and print the Markdown report.
    Run(Box<RunArgs>),
    /// Serve the backend (1 KiB answers) on --listen; used by `run`.
    Backend {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// mesh-proxy binary (a release build).
    #[arg(long, default_value = "target/release/mesh-proxy")]
    mesh_proxy: PathBuf,
    /// Envoy binary; `none` skips the Envoy pair.
    #[arg(long, default_value = "envoy")]
    envoy: String,
    /// HAProxy binary; `none` skips it.
    #[arg(long, default_value = "none")]
    haproxy: String,
    /// oha binary.
    #[arg(long, default_value = "target/bench-tools/bin/oha")]
    oha: PathBuf,
    /// wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Fixed rate of the latency runs, requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Connections.
    #[arg(long, default_value_t = 10)]
    connections: u32,
    /// Warm-up seconds per scenario.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Scratch directory (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// CPUs of the client-side proxy of every pair (`taskset -c` list).
    #[arg(long, default_value = "0", value_parser = scenario::cpu_list)]
    client_cpus: String,
    /// CPUs of the server-side proxy of every pair.
    #[arg(long, default_value = "1", value_parser = scenario::cpu_list)]
    server_cpus: String,
    /// CPUs of the backend and the load generators; by default they float.
    /// On a machine with 4+ cores, e.g. `--load-cpus 2-3` keeps them off
    /// the proxies' cores.
    #[arg(long, value_parser = scenario::cpu_list)]
    load_cpus: Option<String>,
}

fn optional(bin: &str) -> Option<PathBuf> {
    (bin != "none").then(|| PathBuf::from(bin))
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn machine(command: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        mem_mib,
        load_before: loadavg(),
        load_after: String::new(),
        command,
        tools: Vec::new(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn run_bench(args: RunArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut m = machine(command);
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("mesh-bench")
            .tempdir()?
            .keep(),
    };
    let shape = |rate| Shape {
        duration: Duration::from_secs(args.duration),
        connections: args.connections,
        rate,
    };
    let opts = Options {
        work_dir: work_dir.clone(),
        self_exe: std::env::current_exe()?,
        mesh_proxy: args.mesh_proxy.clone(),
        envoy: optional(&args.envoy),
        haproxy: optional(&args.haproxy),
        oha: args.oha.clone(),
        wrk: args.wrk.clone(),
        reps: args.reps,
        fixed: shape(args.rate),
        max: shape(0),
        warmup: Duration::from_secs(args.warmup),
        placement: Placement {
            client: args.client_cpus.clone(),
            server: args.server_cpus.clone(),
            load: args.load_cpus.clone(),
        },
    };
    let oha = opts.oha.display().to_string();
    let wrk = opts.wrk.display().to_string();
    m.tools = [
        first_line(&oha, &["--version"]),
        first_line(&wrk, &["-v"]),
        opts.envoy
            .as_ref()
            .and_then(|e| first_line(&e.display().to_string(), &["--version"])),
        opts.haproxy
            .as_ref()
            .and_then(|h| first_line(&h.display().to_string(), &["-v"])),
    ]
    .into_iter()
    .flatten()
    .collect();
    eprintln!("mesh-bench: work dir {}", work_dir.display());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ads = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        StaticAds::spawn(l)
    })?;
    let outcome = run::run(&opts, &ads).context("benchmark run")?;
    m.load_after = loadavg();
    let mut md = report::markdown(&m, &outcome.figures, &outcome.comparisons);
    for note in &outcome.notes {
        md.push_str(&format!("\nNote: {note}\n"));
    }
    if let Some((_, c)) = outcome.comparisons.iter().find(|(n, _)| n == "mesh-proxy")
        && let Some(pair) = outcome.figures.iter().find(|f| f.name == "mesh-proxy")
    {
        md.push_str(&format!("\nREADME: {}\n", report::summary_line(c, pair)));
    }
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    mesh_ca::install_crypto_provider();
    match Cli::parse().command {
        Command::Run(args) => run_bench(*args),
        Command::Backend { listen } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind(listen).await?;
                mesh_e2e::bench::backend::serve(l).await;
                anyhow::Ok(())
            })
        }
    }
}
