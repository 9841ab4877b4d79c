//! From raw samples to figures: medians over repetitions, derived
//! quantities (CPU per 1,000 rps, requests per proxy core) and ratios to
//! Envoy's, checked against the goals of the proxy issue.

/// What one proxy process used during one load run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProxyUsage {
    /// User + system CPU seconds over the run.
    pub cpu_seconds: f64,
    /// Of those, the seconds in user space (the rest is the kernel's work
    /// for the process: system calls, TCP, wake-ups).
    pub user_seconds: f64,
    /// Highest VmRSS seen during the run, KiB.
    pub rss_peak_kib: u64,
}

/// One repetition of one scenario.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Fixed-rate run: achieved rps.
    pub fixed_rps: f64,
    /// Fixed-rate run: median latency, µs.
    pub p50_us: f64,
    /// Fixed-rate run: 99th percentile, µs.
    pub p99_us: f64,
    /// Fixed-rate run: wall seconds.
    pub fixed_seconds: f64,
    /// Fixed-rate run: each proxy of the scenario (none for direct).
    pub fixed_usage: Vec<ProxyUsage>,
    /// Max-throughput run: rps.
    pub max_rps: f64,
    /// Max-throughput run: wall seconds.
    pub max_seconds: f64,
    /// Max-throughput run: each proxy's usage.
    pub max_usage: Vec<ProxyUsage>,
}

/// Median of the values (mean of the middle two for an even count); NaN
/// when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

impl Sample {
    /// CPU of all the scenario's proxies, in % of one core, per 1,000 rps
    /// of the fixed-rate run. NaN without proxies.
    pub fn cpu_pct_per_1k_rps(&self) -> f64 {
        self.per_1k_rps(|u| u.cpu_seconds)
    }

    /// The user-space part of [`Sample::cpu_pct_per_1k_rps`].
    pub fn user_pct_per_1k_rps(&self) -> f64 {
        self.per_1k_rps(|u| u.user_seconds)
    }

    fn per_1k_rps(&self, seconds: impl Fn(&ProxyUsage) -> f64) -> f64 {
        if self.fixed_usage.is_empty() || self.fixed_seconds <= 0.0 || self.fixed_rps <= 0.0 {
            return f64::NAN;
        }
        let cpu: f64 = self.fixed_usage.iter().map(seconds).sum();
        100.0 * cpu / self.fixed_seconds / (self.fixed_rps / 1000.0)
    }

    /// Requests per second per core of proxy CPU in the max-throughput run,
    /// for the busiest proxy of the pair (the one that limits the pair).
    pub fn rps_per_proxy_core(&self) -> f64 {
        self.max_usage
            .iter()
            .filter(|u| u.cpu_seconds > 0.0)
            .map(|u| self.max_rps * self.max_seconds / u.cpu_seconds)
            .fold(f64::NAN, f64::min)
    }

    /// Highest VmRSS of any proxy of the scenario under load, KiB.
    pub fn rss_load_kib(&self) -> f64 {
        self.fixed_usage
            .iter()
            .chain(&self.max_usage)
            .map(|u| u.rss_peak_kib as f64)
            .fold(f64::NAN, f64::max)
    }
}

/// Medians of one scenario over its repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Scenario name (`direct`, `mesh-proxy`, `envoy`, `haproxy`).
    pub name: String,
    /// Repetitions.
    pub reps: usize,
    /// Fixed-rate achieved rps.
    pub fixed_rps: f64,
    /// Median p50, µs.
    pub p50_us: f64,
    /// Median p99, µs.
    pub p99_us: f64,
    /// CPU of the pair, % of a core per 1,000 rps.
    pub cpu_pct_per_1k: f64,
    /// Its user-space part.
    pub user_pct_per_1k: f64,
    /// wrk rps through the pair.
    pub max_rps: f64,
    /// rps per core of the busiest proxy.
    pub rps_per_core: f64,
    /// Idle RSS of the largest proxy of the pair, KiB (before any load).
    pub rss_idle_kib: f64,
    /// RSS of the largest proxy under load, KiB.
    pub rss_load_kib: f64,
}

impl Figures {
    /// Medians of `samples`; `rss_idle_kib` is measured once per process.
    pub fn from_samples(name: &str, samples: &[Sample], rss_idle_kib: f64) -> Self {
        let m = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
        Self {
            name: name.into(),
            reps: samples.len(),
            fixed_rps: m(&|s| s.fixed_rps),
            p50_us: m(&|s| s.p50_us),
            p99_us: m(&|s| s.p99_us),
            cpu_pct_per_1k: m(&|s| s.cpu_pct_per_1k_rps()),
            user_pct_per_1k: m(&|s| s.user_pct_per_1k_rps()),
            max_rps: m(&|s| s.max_rps),
            rps_per_core: m(&|s| s.rps_per_proxy_core()),
            rss_idle_kib,
            rss_load_kib: m(&|s| s.rss_load_kib()),
        }
    }
}

/// A proxy pair compared with Envoy's, both relative to the direct run.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Added median latency vs direct, µs.
    pub added_p50_us: f64,
    /// Added p99 vs direct, µs.
    pub added_p99_us: f64,
    /// added p50 / Envoy's added p50.
    pub added_p50_ratio: f64,
    /// added p99 / Envoy's added p99.
    pub added_p99_ratio: f64,
    /// CPU per 1k rps / Envoy's.
    pub cpu_ratio: f64,
    /// User-space CPU per 1k rps / Envoy's (a diagnostic, not a goal).
    pub user_cpu_ratio: f64,
    /// rps per core / Envoy's.
    pub rps_per_core_ratio: f64,
    /// Idle RSS / Envoy's.
    pub rss_idle_ratio: f64,
    /// RSS under load / Envoy's.
    pub rss_load_ratio: f64,
}

impl Comparison {
    /// Compares `pair` with `envoy`, latencies taken relative to `direct`.
    pub fn new(direct: &Figures, pair: &Figures, envoy: &Figures) -> Self {
        let added = |f: &Figures| (f.p50_us - direct.p50_us, f.p99_us - direct.p99_us);
        let (p50, p99) = added(pair);
        let (e50, e99) = added(envoy);
        Self {
            added_p50_us: p50,
            added_p99_us: p99,
            added_p50_ratio: p50 / e50,
            added_p99_ratio: p99 / e99,
            cpu_ratio: pair.cpu_pct_per_1k / envoy.cpu_pct_per_1k,
            user_cpu_ratio: pair.user_pct_per_1k / envoy.user_pct_per_1k,
            rps_per_core_ratio: pair.rps_per_core / envoy.rps_per_core,
            rss_idle_ratio: pair.rss_idle_kib / envoy.rss_idle_kib,
            rss_load_ratio: pair.rss_load_kib / envoy.rss_load_kib,
        }
    }

    /// The goals, each with whether it is met: added p50 ≤ 0.5x
    /// Envoy's, CPU per 1k rps ≤ 0.35x, rps per core ≥ 3.5x, idle RSS
    /// ≤ 10 MB per proxy.
    pub fn goals(&self, pair: &Figures) -> Vec<(&'static str, String, bool)> {
        vec![
            (
                "added p50 <= 0.5x Envoy's",
                format!("{:.2}x", self.added_p50_ratio),
                self.added_p50_ratio <= 0.5,
            ),
            (
                "CPU per 1k rps <= 0.35x Envoy's",
                format!("{:.2}x", self.cpu_ratio),
                self.cpu_ratio <= 0.35,
            ),
            (
                "max rps per core >= 3.5x Envoy's",
                format!("{:.2}x", self.rps_per_core_ratio),
                self.rps_per_core_ratio >= 3.5,
            ),
            (
                "RSS <= 10 MB idle per proxy",
                format!("{:.1} MB", pair.rss_idle_kib / 1024.0),
                pair.rss_idle_kib <= 10.0 * 1024.0,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: f64, rss: u64) -> ProxyUsage {
        ProxyUsage {
            cpu_seconds: cpu,
            user_seconds: cpu / 4.0,
            rss_peak_kib: rss,
        }
    }

    #[test]
    fn median_of_odd_even_and_empty_sets() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn cpu_per_1k_rps_sums_the_pair_and_scales_by_rate() {
        // Two proxies using 1 s and 0.5 s of CPU over 10 s at 1,000 rps:
        // 15 % of a core for 1k rps.
        let s = Sample {
            fixed_rps: 1000.0,
            fixed_seconds: 10.0,
            fixed_usage: vec![usage(1.0, 0), usage(0.5, 0)],
            ..Default::default()
        };
        assert!((s.cpu_pct_per_1k_rps() - 15.0).abs() < 1e-9);
        assert!((s.user_pct_per_1k_rps() - 3.75).abs() < 1e-9);
        assert!(Sample::default().cpu_pct_per_1k_rps().is_nan());
    }

    #[test]
    fn rps_per_core_is_limited_by_the_busier_proxy() {
        // 20k rps for 10 s = 200k requests; the busier proxy burnt 8 s.
        let s = Sample {
            max_rps: 20_000.0,
            max_seconds: 10.0,
            max_usage: vec![usage(8.0, 0), usage(5.0, 0)],
            ..Default::default()
        };
        assert!((s.rps_per_proxy_core() - 25_000.0).abs() < 1e-6);
    }

    #[test]
    fn comparison_takes_added_latency_relative_to_direct() {
        let f = |name: &str, p50, p99, cpu, rpc, rss| Figures {
            name: name.into(),
            reps: 3,
            fixed_rps: 1000.0,
            p50_us: p50,
            p99_us: p99,
            cpu_pct_per_1k: cpu,
            user_pct_per_1k: cpu / 2.0,
            max_rps: 0.0,
            rps_per_core: rpc,
            rss_idle_kib: rss,
            rss_load_kib: rss,
        };
        let direct = f("direct", 100.0, 200.0, f64::NAN, f64::NAN, f64::NAN);
        let ours = f("mesh-proxy", 150.0, 300.0, 10.0, 40_000.0, 5120.0);
        let envoy = f("envoy", 300.0, 600.0, 40.0, 10_000.0, 40960.0);
        let c = Comparison::new(&direct, &ours, &envoy);
        assert!((c.added_p50_ratio - 0.25).abs() < 1e-9);
        assert!((c.added_p99_ratio - 0.25).abs() < 1e-9);
        assert!((c.cpu_ratio - 0.25).abs() < 1e-9);
        assert!((c.user_cpu_ratio - 0.25).abs() < 1e-9);
        assert!((c.rps_per_core_ratio - 4.0).abs() < 1e-9);
        assert!((c.rss_idle_ratio - 0.125).abs() < 1e-9);
        assert!(c.goals(&ours).iter().all(|(_, _, met)| *met));
        let slow = f("slow", 400.0, 900.0, 40.0, 10_000.0, 20480.0);
        let c = Comparison::new(&direct, &slow, &envoy);
        assert_eq!(c.goals(&slow).iter().filter(|(_, _, met)| *met).count(), 0);
    }
}
