//! Renders the figures as Markdown (pasted into docs/performance.md) and
//! as the one-line summary for the README.

use std::fmt::Write as _;

use super::figures::{Comparison, Figures};

/// The machine and conditions of a run.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// `nproc`.
    pub cpus: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal, MiB.
    pub mem_mib: u64,
    /// 1-minute load average when the run started.
    pub load_before: String,
    /// 1-minute load average when it ended.
    pub load_after: String,
    /// The command line of the run.
    pub command: String,
    /// Tool versions (oha, wrk, envoy, ...).
    pub tools: Vec<String>,
}

fn num(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.decimals$}")
    }
}

fn ratio(x: f64) -> String {
    if x.is_nan() || x.is_infinite() {
        "–".into()
    } else {
        format!("{x:.2}x")
    }
}

/// The Markdown report: a table per scenario, the ratios to Envoy and the
/// goals.
pub fn markdown(machine: &Machine, figures: &[Figures], cmp: &[(String, Comparison)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), {} MiB; load average {} before, {} after.",
        machine.cpus, machine.cpu_model, machine.mem_mib, machine.load_before, machine.load_after
    );
    let _ = writeln!(out, "Command: `{}`", machine.command);
    if !machine.tools.is_empty() {
        let _ = writeln!(out, "Tools: {}.", machine.tools.join(", "));
    }
    let _ = writeln!(
        out,
        "\n| scenario | rps (fixed) | p50 µs | p99 µs | CPU % of a core per 1k rps (pair) | of which user space | max rps (wrk) | rps per proxy core | RSS idle MB | RSS load MB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            num(f.fixed_rps, 0),
            num(f.p50_us, 0),
            num(f.p99_us, 0),
            num(f.cpu_pct_per_1k, 1),
            num(f.user_pct_per_1k, 1),
            num(f.max_rps, 0),
            num(f.rps_per_core, 0),
            num(f.rss_idle_kib / 1024.0, 1),
            num(f.rss_load_kib / 1024.0, 1),
        );
    }
    let _ = writeln!(
        out,
        "\n| vs Envoy | added p50 µs | ratio | added p99 µs | ratio | CPU per 1k rps | user space only | rps per core | RSS idle | RSS load |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (name, c) in cmp {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(c.added_p50_us, 0),
            ratio(c.added_p50_ratio),
            num(c.added_p99_us, 0),
            ratio(c.added_p99_ratio),
            ratio(c.cpu_ratio),
            ratio(c.user_cpu_ratio),
            ratio(c.rps_per_core_ratio),
            ratio(c.rss_idle_ratio),
            ratio(c.rss_load_ratio),
        );
    }
    if let Some((name, c)) = cmp.iter().find(|(n, _)| n == "mesh-proxy")
        && let Some(pair) = figures.iter().find(|f| &f.name == name)
    {
        let _ = writeln!(out, "\n| goal ({name}) | measured | met |");
        let _ = writeln!(out, "|---|---|---|");
        for (goal, measured, met) in c.goals(pair) {
            let _ = writeln!(
                out,
                "| {goal} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            );
        }
    }
    out
}

/// One line for the README's figures section.
pub fn summary_line(c: &Comparison, pair: &Figures) -> String {
    format!(
        "mesh-proxy pair vs Envoy pair (mTLS, HTTP/1.1, 1 KiB, one core each): added p50 {}, added p99 {}, CPU per 1k rps {}, max rps per core {}, idle RSS {} MB per proxy ({} of Envoy's)",
        ratio(c.added_p50_ratio),
        ratio(c.added_p99_ratio),
        ratio(c.cpu_ratio),
        ratio(c.rps_per_core_ratio),
        num(pair.rss_idle_kib / 1024.0, 1),
        ratio(c.rss_idle_ratio),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(name: &str, p50: f64, cpu: f64, rpc: f64, rss: f64) -> Figures {
        Figures {
            name: name.into(),
            reps: 3,
            fixed_rps: 1000.0,
            p50_us: p50,
            p99_us: p50 * 2.0,
            cpu_pct_per_1k: cpu,
            user_pct_per_1k: cpu / 2.0,
            max_rps: 10_000.0,
            rps_per_core: rpc,
            rss_idle_kib: rss,
            rss_load_kib: rss,
        }
    }

    #[test]
    fn markdown_has_a_row_per_scenario_ratios_and_goals() {
        let direct = fig("direct", 100.0, f64::NAN, f64::NAN, f64::NAN);
        let ours = fig("mesh-proxy", 200.0, 10.0, 30_000.0, 6144.0);
        let envoy = fig("envoy", 400.0, 20.0, 10_000.0, 40_960.0);
        let c = Comparison::new(&direct, &ours, &envoy);
        let md = markdown(
            &Machine {
                cpus: 2,
                command: "scripts/bench.sh".into(),
                ..Default::default()
            },
            &[direct, ours.clone(), envoy],
            &[("mesh-proxy".into(), c.clone())],
        );
        assert!(md.contains("| direct | 1000 | 100 | 200 | – | – |"), "{md}");
        assert!(
            md.contains("| mesh-proxy | 1000 | 200 | 400 | 10.0 | 5.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| mesh-proxy | 100 | 0.33x | 200 | 0.33x | 0.50x | 0.50x | 3.00x |"),
            "{md}"
        );
        assert!(md.contains("| mesh-proxy | 100 | 0.33x |"), "{md}");
        assert!(
            md.contains("| added p50 <= 0.5x Envoy's | 0.33x | yes |"),
            "{md}"
        );
        assert!(md.contains("| max rps per core >= 3.5x Envoy's | 3.00x | **no** |"));
        assert!(md.contains("`scripts/bench.sh`"));
        let line = summary_line(&c, &ours);
        assert!(line.contains("max rps per core 3.00x"), "{line}");
        assert!(line.contains("idle RSS 6.0 MB"), "{line}");
    }
}
