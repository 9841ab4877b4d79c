//! The orchestration: certificates, backend, static ADS, the pairs, then
//! repetitions of (fixed-rate oha, max-throughput wrk) over every scenario
//! in turn, so that drift on a shared machine spreads over all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::figures::{Comparison, Figures, Sample};
use super::load::{self, Shape};
use super::procs::{self, Monitor, Proc};
use super::scenario::{self, Pair, Placement};
use super::xds::StaticAds;
use super::{BenchError, certs, resources};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scratch directory (certificates, configs, logs).
    pub work_dir: PathBuf,
    /// The `mesh-bench` binary itself (runs the backend).
    pub self_exe: PathBuf,
    /// mesh-proxy binary.
    pub mesh_proxy: PathBuf,
    /// Envoy binary; None skips the Envoy pair.
    pub envoy: Option<PathBuf>,
    /// HAProxy binary; None skips it.
    pub haproxy: Option<PathBuf>,
    /// oha binary.
    pub oha: PathBuf,
    /// wrk binary.
    pub wrk: PathBuf,
    /// Repetitions.
    pub reps: usize,
    /// The fixed-rate run.
    pub fixed: Shape,
    /// The max-throughput run.
    pub max: Shape,
    /// Warm-up per scenario before the first repetition.
    pub warmup: Duration,
    /// CPU placement of the proxies, the backend and the load generators.
    pub placement: Placement,
}

/// Result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Medians per scenario (direct first).
    pub figures: Vec<Figures>,
    /// Each pair against Envoy's.
    pub comparisons: Vec<(String, Comparison)>,
    /// Notes (request errors seen, ...).
    pub notes: Vec<String>,
}

struct Scenario {
    name: String,
    entry: SocketAddr,
    pair: Option<Pair>,
    rss_idle_kib: f64,
    samples: Vec<Sample>,
}

fn progress(msg: &str) {
    eprintln!("mesh-bench: {msg}");
}

fn check_nacks(ads: &StaticAds) -> Result<(), BenchError> {
    let nacks = ads.nacks();
    if nacks.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Nack(nacks.join("; ")))
    }
}

fn start_ours(
    opts: &Options,
    ads: &StaticAds,
    certs: &[PathBuf],
    backend: SocketAddr,
) -> Result<Pair, BenchError> {
    let (entry, inbound) = (procs::free_addr()?, procs::free_addr()?);
    set_pair_resources(ads, "ours", entry, inbound, backend)?;
    let mut procs_ = Vec::new();
    for (side, cpu, cert_dir) in [
        ("client", &opts.placement.client, &certs[0]),
        ("server", &opts.placement.server, &certs[1]),
    ] {
        let node = scenario::node_id("ours", side);
        let ports = [
            procs::free_port()?,
            procs::free_port()?,
            procs::free_port()?,
            procs::free_port()?,
            procs::free_port()?,
        ];
        let args = scenario::mesh_proxy_args(ads.addr, &node, side, cert_dir, ports);
        let log = opts.work_dir.join(format!("{node}.log"));
        procs_.push(Proc::spawn(
            &node,
            Some(cpu.as_str()),
            &opts.mesh_proxy,
            &args,
            &[("RUST_LOG", "warn")],
            &log,
        )?);
    }
    Ok(Pair {
        name: "mesh-proxy".into(),
        entry,
        procs: procs_,
    })
}

fn set_pair_resources(
    ads: &StaticAds,
    pair: &str,
    entry: SocketAddr,
    inbound: SocketAddr,
    backend: SocketAddr,
) -> Result<(), BenchError> {
    let server_id = certs::spiffe_id("server")?.to_string();
    ads.set_node(
        &scenario::node_id(pair, "client"),
        resources::client_side(entry, inbound, &server_id),
    );
    ads.set_node(
        &scenario::node_id(pair, "server"),
        resources::server_side(inbound, backend),
    );
    Ok(())
}

fn start_envoy(
    opts: &Options,
    envoy: &Path,
    ads: &StaticAds,
    certs: &[PathBuf],
    backend: SocketAddr,
) -> Result<Pair, BenchError> {
    let (entry, inbound) = (procs::free_addr()?, procs::free_addr()?);
    set_pair_resources(ads, "envoy", entry, inbound, backend)?;
    let mut procs_ = Vec::new();
    for (side, cpu, cert_dir) in [
        ("client", &opts.placement.client, &certs[0]),
        ("server", &opts.placement.server, &certs[1]),
    ] {
        let node = scenario::node_id("envoy", side);
        let boot = scenario::envoy_bootstrap(ads.addr, &node, cert_dir, procs::free_port()?);
        let path =
            scenario::write_file(&opts.work_dir, &format!("{node}.json"), &boot.to_string())?;
        let log = opts.work_dir.join(format!("{node}.log"));
        procs_.push(Proc::spawn(
            &node,
            Some(cpu.as_str()),
            envoy,
            &scenario::envoy_args(&path),
            &[],
            &log,
        )?);
    }
    Ok(Pair {
        name: "envoy".into(),
        entry,
        procs: procs_,
    })
}

fn start_haproxy(
    opts: &Options,
    haproxy: &Path,
    backend: SocketAddr,
    certs: &[PathBuf],
) -> Result<Pair, BenchError> {
    let (entry, inbound) = (procs::free_addr()?, procs::free_addr()?);
    let mut procs_ = Vec::new();
    for (side, cpu, listen, upstream, cert_dir) in [
        ("client", &opts.placement.client, entry, inbound, &certs[0]),
        (
            "server",
            &opts.placement.server,
            inbound,
            backend,
            &certs[1],
        ),
    ] {
        let name = format!("haproxy-{side}");
        let cfg = scenario::haproxy_config(side, listen, upstream, cert_dir);
        let path = scenario::write_file(&opts.work_dir, &format!("{name}.cfg"), &cfg)?;
        let log = opts.work_dir.join(format!("{name}.log"));
        let args = vec!["-db".to_owned(), "-f".into(), path.display().to_string()];
        procs_.push(Proc::spawn(
            &name,
            Some(cpu.as_str()),
            haproxy,
            &args,
            &[],
            &log,
        )?);
    }
    Ok(Pair {
        name: "haproxy".into(),
        entry,
        procs: procs_,
    })
}

fn idle_rss(pair: &Pair) -> Result<f64, BenchError> {
    let mut max = 0u64;
    for pid in pair.pids() {
        max = max.max(procs::rss_kib(pid)?);
    }
    Ok(max as f64)
}

fn measure(
    opts: &Options,
    scenario: &Scenario,
    ticks: f64,
) -> Result<(Sample, Vec<String>), BenchError> {
    let pids = scenario.pair.as_ref().map(Pair::pids).unwrap_or_default();
    let mut notes = Vec::new();
    let monitor = Monitor::start(&pids)?;
    let oha = load::oha(
        &opts.oha,
        opts.placement.load.as_deref(),
        scenario.entry,
        opts.fixed,
    )?;
    let (fixed_usage, fixed_seconds) = monitor.stop(ticks)?;
    if oha.success_rate < 0.999 || oha.non_200 > 0 {
        notes.push(format!(
            "{}: oha success rate {:.4}, {} non-200",
            scenario.name, oha.success_rate, oha.non_200
        ));
    }
    let monitor = Monitor::start(&pids)?;
    let wrk = load::wrk(
        &opts.wrk,
        opts.placement.load.as_deref(),
        scenario.entry,
        opts.max,
    )?;
    let (max_usage, max_seconds) = monitor.stop(ticks)?;
    if wrk.errors > 0 {
        notes.push(format!("{}: wrk {} errors", scenario.name, wrk.errors));
    }
    Ok((
        Sample {
            fixed_rps: oha.rps,
            p50_us: oha.p50_us,
            p99_us: oha.p99_us,
            fixed_seconds,
            fixed_usage,
            max_rps: wrk.rps,
            max_seconds,
            max_usage,
        },
        notes,
    ))
}

/// Runs the whole benchmark. `ads` must already be serving (it runs on
/// the caller's tokio runtime while this function blocks).
pub fn run(opts: &Options, ads: &StaticAds) -> Result<Outcome, BenchError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| BenchError::io("mkdir work dir", e))?;
    let certs = certs::make(&opts.work_dir.join("certs"), &["client", "server"])?;
    let backend_addr = procs::free_addr()?;
    let mut backend = Proc::spawn(
        "backend",
        opts.placement.load.as_deref(),
        &opts.self_exe,
        &[
            "backend".into(),
            "--listen".into(),
            backend_addr.to_string(),
        ],
        &[],
        &opts.work_dir.join("backend.log"),
    )?;
    procs::wait_serving(
        "backend",
        backend_addr,
        &mut [&mut backend],
        Duration::from_secs(10),
    )?;

    let mut pairs = vec![start_ours(opts, ads, &certs, backend_addr)?];
    if let Some(envoy) = &opts.envoy {
        pairs.push(start_envoy(opts, envoy, ads, &certs, backend_addr)?);
    }
    if let Some(haproxy) = &opts.haproxy {
        pairs.push(start_haproxy(opts, haproxy, backend_addr, &certs)?);
    }

    let mut scenarios = vec![Scenario {
        name: "direct".into(),
        entry: backend_addr,
        pair: None,
        rss_idle_kib: f64::NAN,
        samples: Vec::new(),
    }];
    for mut pair in pairs {
        let name = pair.name.clone();
        let entry = pair.entry;
        {
            let mut refs: Vec<&mut Proc> = pair.procs.iter_mut().collect();
            procs::wait_serving(&name, entry, &mut refs, Duration::from_secs(30))?;
        }
        check_nacks(ads)?;
        let rss = idle_rss(&pair)?;
        progress(&format!(
            "{name} serving on {entry}; idle RSS {:.1} MB",
            rss / 1024.0
        ));
        scenarios.push(Scenario {
            name,
            entry,
            pair: Some(pair),
            rss_idle_kib: rss,
            samples: Vec::new(),
        });
    }

    let ticks = procs::clock_ticks_per_second();
    let warm = Shape {
        duration: opts.warmup,
        ..opts.fixed
    };
    for s in &scenarios {
        if !opts.warmup.is_zero() {
            load::oha(&opts.oha, opts.placement.load.as_deref(), s.entry, warm)?;
        }
    }
    let mut notes = Vec::new();
    for rep in 0..opts.reps {
        for s in &mut scenarios {
            progress(&format!("repetition {}/{}: {}", rep + 1, opts.reps, s.name));
            let (sample, mut n) = measure(opts, s, ticks)?;
            notes.append(&mut n);
            s.samples.push(sample);
        }
    }
    check_nacks(ads)?;
    let figures: Vec<Figures> = scenarios
        .iter()
        .map(|s| Figures::from_samples(&s.name, &s.samples, s.rss_idle_kib))
        .collect();
    let mut comparisons = Vec::new();
    if let (Some(direct), Some(envoy)) = (
        figures.iter().find(|f| f.name == "direct"),
        figures.iter().find(|f| f.name == "envoy"),
    ) {
        for f in figures.iter().filter(|f| f.name != "direct") {
            comparisons.push((f.name.clone(), Comparison::new(direct, f, envoy)));
        }
    }
    drop(backend);
    Ok(Outcome {
        figures,
        comparisons,
        notes,
    })
}
