//! `meshctl demo`: the whole mesh on one machine. meshd with its CA, the
//! book shop (productpage → details, reviews v1/v2 → ratings) with a
//! sidecar per workload, a canary VirtualService, a little traffic, then
//! `proxy-status`, a per-service summary from the sidecars' metrics and a
//! progress line until Ctrl-C (or `--duration`). Everything it created is
//! removed on exit, also when one of its processes dies.
//!
//! The orchestration is `mesh_e2e::bookshop`; this module is presentation.

pub mod metrics;
pub mod progress;
pub mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mesh_e2e::bookshop::{Bookshop, SERVICES, ShopMode, reviews_canary};
use mesh_e2e::netns::netns_unavailable;

use self::progress::Progress;

/// How the demo isolates workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// netns as root, else explicit.
    Auto,
    /// Every workload in its own network namespace with transparent
    /// interception (`mesh-proxy init`); needs root.
    Netns,
    /// Sidecars in explicit mode on loopback; no root needed.
    Explicit,
}

/// Flags of `meshctl demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How to run the workloads.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Exit by itself after this long (e.g. `30s`, `2m`); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Keep meshd's store, CA and the demo's config here (default: a temp
    /// dir removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Requests per second sent to productpage.
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// List every process (with its PID) and namespace the demo created.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    }
}

/// Picks the mode and says why, given why netns mode cannot run here
/// (`None`: it can).
pub fn choose(requested: Mode, netns_unavailable: Option<&str>) -> (Mode, String) {
    match (requested, netns_unavailable) {
        (Mode::Netns, _) => (Mode::Netns, "asked for with --mode netns".into()),
        (Mode::Explicit, _) => (Mode::Explicit, "asked for with --mode explicit".into()),
        (Mode::Auto, None) => (
            Mode::Netns,
            "running as root: each workload gets its own network namespace and transparent interception".into(),
        ),
        (Mode::Auto, Some(why)) => (
            Mode::Explicit,
            format!("{why}: sidecars in explicit mode on loopback; as root with iproute2 and iptables the demo uses network namespaces"),
        ),
    }
}

/// Runs `meshctl demo`; returns the exit code.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let unavailable = netns_unavailable();
    let (mode, why) = choose(args.mode, unavailable.as_deref());
    match mode {
        Mode::Netns => {
            println!("meshctl demo: netns mode ({why})");
            if let Some(reason) = unavailable {
                eprintln!(
                    "error: netns mode cannot run here: {reason}; run `sudo {} demo`, or use `--mode explicit`",
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "meshctl".into())
                );
                return Ok(1);
            }
        }
        Mode::Explicit | Mode::Auto => {
            println!("meshctl demo: explicit mode ({why})");
        }
    }
    let shop_mode = if mode == Mode::Netns {
        ShopMode::Netns
    } else {
        ShopMode::Explicit
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    let code = tokio::task::spawn_blocking(move || run_shop(shop_mode, &args, &stop)).await?;
    Ok(code)
}

/// Sets `stop` on SIGINT or SIGTERM.
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        stop.store(true, Ordering::SeqCst);
    });
    Ok(())
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

fn run_shop(mode: ShopMode, args: &Args, stop: &AtomicBool) -> i32 {
    let mut n = 0;
    let mut step = |what: &str| {
        n += 1;
        out(&format!("[{n}] {what}\n"));
    };
    let interrupted = || stop.load(Ordering::SeqCst);
    let shop = match Bookshop::start(mode, args.data_dir.as_deref(), &mut step, &interrupted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("everything the demo created so far has been removed");
            return 1;
        }
    };
    let code = session::run(shop, args, stop);
    out(
        "cleaned up: every process the demo started is stopped and its network namespaces are deleted\n",
    );
    code
}

mod session {
    //! The running demo: canary, traffic, tables, progress, crash watch.

    use super::*;

    /// Shows everything, then the progress line until stopped; drops (so
    /// cleans up) the book shop before returning the exit code.
    pub(super) fn run(mut shop: Bookshop, args: &Args, stop: &AtomicBool) -> i32 {
        if args.verbose {
            out("namespaces:\n");
            for ns in shop.namespaces() {
                out(&format!("  {ns}\n"));
            }
            out("processes:\n");
            for (label, pid) in shop.processes() {
                out(&format!("  pid {pid:<8} {label}\n"));
            }
        }
        let result = show(&mut shop, args, stop);
        let mut step_code = match result {
            Ok(()) => 0,
            Err(e) => {
                out("\n");
                eprintln!("error: {e}");
                1
            }
        };
        if let Some(crash) = shop.crashed() {
            out("\n");
            eprintln!(
                "error: {} (pid {}) exited unexpectedly ({}); the last lines of its log:\n{}",
                crash.label, crash.pid, crash.status, crash.log_tail
            );
            step_code = 1;
        }
        out(&format!(
            "\nstopping {} processes and deleting {} network namespaces\n",
            shop.processes().len(),
            shop.namespaces().len()
        ));
        drop(shop);
        step_code
    }

    fn show(shop: &mut Bookshop, args: &Args, stop: &AtomicBool) -> Result<(), String> {
        shop.apply_canary(90, 10).map_err(|e| e.to_string())?;
        out("canary: VirtualService reviews sends 90% to subset v1 and 10% to v2\n");
        shop.start_traffic(args.rps).map_err(|e| e.to_string())?;
        out(&format!(
            "traffic: mesh-load sends {} requests/s to {}\n",
            args.rps,
            shop.productpage_url()
        ));
        let sample = wait_for(shop, stop, Duration::from_secs(30), |s| {
            s.sample()
                .map_err(|e| e.to_string())
                .and_then(|v| complete(&v).then_some(v).ok_or("incomplete".into()))
        })?;
        out("\none request through the mesh (each service names its caller's SPIFFE ID):\n");
        out(&chain(&sample, 0));
        let started = Instant::now();
        let enough = f64::from(args.rps.max(1)) * 3.0;
        wait_for(shop, stop, Duration::from_secs(30), |s| {
            let rows = rows(s);
            let served = rows.first().map_or(0.0, |r| r.requests);
            (served >= enough)
                .then_some(())
                .ok_or(format!("{served} requests so far"))
        })?;
        let syncz = shop.syncz().map_err(|e| e.to_string())?;
        let proxies = syncz["proxies"].as_array().cloned().unwrap_or_default();
        let cp = syncz["control_plane"].as_str().unwrap_or("meshd");
        out("\n$ meshctl proxy-status\n");
        out(&crate::status::table(&proxies, cp));
        out(&format!(
            "\nper service, as the server-side sidecars saw it (after {:.0}s):\n",
            started.elapsed().as_secs_f64()
        ));
        out(&summary::table(&rows(shop)));
        out(&try_next(shop, args));
        steady(shop, args, stop)?;
        out("\nfinal per-service summary:\n");
        out(&summary::table(&rows(shop)));
        Ok(())
    }

    /// Polls `check` once a second until it succeeds, stopping on Ctrl-C
    /// or a crashed child.
    fn wait_for<T>(
        shop: &mut Bookshop,
        stop: &AtomicBool,
        timeout: Duration,
        mut check: impl FnMut(&Bookshop) -> Result<T, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            if let Some(c) = shop.crashed() {
                return Err(crash_text(&c));
            }
            match check(shop) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("gave up after {}s: {e}", timeout.as_secs()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn crash_text(c: &mesh_e2e::bookshop::Crash) -> String {
        format!(
            "{} (pid {}) exited unexpectedly ({}); the last lines of its log:\n{}",
            c.label, c.pid, c.status, c.log_tail
        )
    }

    fn rows(shop: &Bookshop) -> Vec<summary::ServiceRow> {
        let scrapes: Vec<summary::Scrape> = shop
            .sidecars()
            .iter()
            .filter_map(|s| {
                shop.scrape(s).ok().map(|text| summary::Scrape {
                    workload: s.workload.clone(),
                    service: s.service.clone(),
                    text,
                })
            })
            .collect();
        summary::summarize(&scrapes, &SERVICES)
    }

    /// Progress until Ctrl-C, `--duration` or a crash.
    fn steady(shop: &mut Bookshop, args: &Args, stop: &AtomicBool) -> Result<(), String> {
        let end = args.duration.map(|d| Instant::now() + d);
        let mut progress = Progress::default();
        let mut next = Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) {
                out("\ninterrupted\n");
                return Ok(());
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                out(&format!(
                    "\n--duration {}s is over\n",
                    args.duration.unwrap_or_default().as_secs()
                ));
                return Ok(());
            }
            if let Some(c) = shop.crashed() {
                return Err(crash_text(&c));
            }
            if Instant::now() >= next {
                let front = rows(shop).into_iter().next().unwrap_or_default();
                let line = progress.update(Instant::now(), front.requests, front.errors);
                out(&progress::in_place(&line));
                next = Instant::now() + Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a reply and every upstream's reply succeeded.
    fn complete(v: &serde_json::Value) -> bool {
        v["upstreams"].as_array().is_some_and(|ups| {
            ups.iter()
                .all(|u| u["status"] == 200 && complete(&u["body"]))
        }) && v["service"].is_string()
    }

    /// The reply as a tree: service, version, caller; upstreams indented.
    pub(super) fn chain(v: &serde_json::Value, depth: usize) -> String {
        let caller = v["caller"]
            .as_str()
            .unwrap_or("none (plain text from outside the mesh)");
        let mut s = format!(
            "{}{} {}  <- caller {}\n",
            "   ".repeat(depth),
            v["service"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?"),
            caller
        );
        for u in v["upstreams"].as_array().into_iter().flatten() {
            s.push_str(&chain(&u["body"], depth + 1));
        }
        s
    }

    fn try_next(shop: &Bookshop, args: &Args) -> String {
        let me = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "meshctl".into());
        let all_v2 = shop.work_dir().join("reviews-all-v2.yaml");
        let _ = std::fs::write(&all_v2, reviews_canary(0, 100));
        let api = shop.api();
        let until = match args.duration {
            Some(d) => format!("for {}s", d.as_secs()),
            None => "until Ctrl-C".into(),
        };
        // In netns mode meshd and the pods are reachable only from the node
        // namespace.
        let (who, node) = match shop.node_netns() {
            Some(ns) => (" (as root)", format!("ip netns exec {ns} ")),
            None => ("", String::new()),
        };
        let through_sidecar = match (
            shop.pod_netns("productpage-v1"),
            shop.outbound_proxy("productpage-v1"),
        ) {
            (Some(ns), _) => format!(
                "ip netns exec {ns} curl -s http://reviews:9080/reviews   # through productpage's sidecar (mTLS to reviews)"
            ),
            (None, Some(proxy)) => format!(
                "curl -s -x {proxy} http://reviews:9080/reviews   # through productpage's sidecar (mTLS to reviews)"
            ),
            (None, None) => String::new(),
        };
        format!(
            "\nthe demo keeps running {until}. Try, in another terminal{who}:\n\
             \x20 {node}{me} proxy-status --meshd {api}\n\
             \x20 {node}{me} get virtualservice -o yaml --meshd {api}\n\
             \x20 {node}{me} apply --meshd {api} -f {all}   # all of reviews to v2\n\
             \x20 {through_sidecar}\n\
             \x20 {node}curl -s {url}\n\n",
            all = all_v2.display(),
            url = shop.productpage_url(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").unwrap_err().contains("ms, s, m or h"));
    }

    #[test]
    fn auto_mode_is_netns_when_possible_and_explicit_with_the_reason_otherwise() {
        assert_eq!(choose(Mode::Auto, None).0, Mode::Netns);
        let (mode, why) = choose(Mode::Auto, Some("not running as root"));
        assert_eq!(mode, Mode::Explicit);
        assert!(why.starts_with("not running as root: "), "{why}");
        assert_eq!(choose(Mode::Explicit, None).0, Mode::Explicit);
        assert_eq!(choose(Mode::Netns, Some("x")).0, Mode::Netns);
    }

    #[test]
    fn response_chain_indents_upstreams_and_names_callers() {
        let reply = serde_json::json!({
            "service": "productpage", "version": "v1", "caller": null,
            "upstreams": [{"url": "http://reviews:9080/reviews", "status": 200, "body": {
                "service": "reviews", "version": "v2",
                "caller": "spiffe://cluster.local/ns/default/sa/productpage",
                "upstreams": []
            }}]
        });
        let text = session::chain(&reply, 0);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("productpage v1  <- caller none"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "   reviews v2  <- caller spiffe://cluster.local/ns/default/sa/productpage"
        );
    }
}
