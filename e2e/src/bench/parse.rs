//! Parsers for what the load tools and the kernel print: oha's JSON
//! summary, wrk's text summary, `/proc/<pid>/stat` CPU times and
//! `/proc/<pid>/status` VmRSS.

use serde::Deserialize;

/// Why a tool's output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// oha's output is not the JSON expected.
    #[error("oha output is not the expected JSON")]
    OhaJson(#[source] serde_json::Error),
    /// A line or field was missing.
    #[error("{what} not found in {tool} output")]
    Missing {
        /// The tool or file.
        tool: &'static str,
        /// What was looked for.
        what: &'static str,
    },
}

/// One oha run at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OhaRun {
    /// Requests per second achieved.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Share of requests that got a response (0..=1).
    pub success_rate: f64,
    /// Requests answered with a status other than 200.
    pub non_200: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OhaJson {
    summary: OhaSummary,
    latency_percentiles: OhaPercentiles,
    #[serde(default)]
    status_code_distribution: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OhaSummary {
    success_rate: f64,
    requests_per_sec: f64,
}

#[derive(Deserialize)]
struct OhaPercentiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Parses `oha --output-format json` (latencies in seconds).
pub fn oha_json(text: &str) -> Result<OhaRun, ParseError> {
    let j: OhaJson = serde_json::from_str(text).map_err(ParseError::OhaJson)?;
    let missing = |what| ParseError::Missing { tool: "oha", what };
    let p50 = j.latency_percentiles.p50.ok_or_else(|| missing("p50"))?;
    let p99 = j.latency_percentiles.p99.ok_or_else(|| missing("p99"))?;
    let non_200 = j
        .status_code_distribution
        .iter()
        .filter(|(code, _)| code.as_str() != "200")
        .map(|(_, n)| n)
        .sum();
    Ok(OhaRun {
        rps: j.summary.requests_per_sec,
        p50_us: p50 * 1e6,
        p99_us: p99 * 1e6,
        success_rate: j.summary.success_rate,
        non_200,
    })
}

/// One wrk run: throughput and the count of errors and non-2xx answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

/// Parses wrk's text summary (`Requests/sec:`, optional `Non-2xx or 3xx
/// responses:` and `Socket errors:` lines).
pub fn wrk_text(text: &str) -> Result<WrkRun, ParseError> {
    let mut rps = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(WrkRun {
        rps: rps.ok_or(ParseError::Missing {
            tool: "wrk",
            what: "Requests/sec",
        })?,
        errors,
    })
}

/// CPU time of a process, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// In user space (`utime`).
    pub user: u64,
    /// In the kernel on the process's behalf (`stime`).
    pub system: u64,
}

impl CpuTicks {
    /// User plus system.
    pub fn total(self) -> u64 {
        self.user + self.system
    }
}

/// User and system CPU time, in clock ticks, from `/proc/<pid>/stat`.
pub fn proc_stat_ticks(stat: &str) -> Result<CpuTicks, ParseError> {
    let missing = ParseError::Missing {
        tool: "/proc/<pid>/stat",
        what: "utime/stime",
    };
    // The command name (field 2) may hold spaces and parentheses: the
    // fields we want come after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or(missing)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(CpuTicks { user, system }),
        _ => Err(ParseError::Missing {
            tool: "/proc/<pid>/stat",
            what: "utime/stime",
        }),
    }
}

/// Resident set size in KiB (`VmRSS:`) from `/proc/<pid>/status`.
pub fn proc_status_rss_kib(status: &str) -> Result<u64, ParseError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or(ParseError::Missing {
            tool: "/proc/<pid>/status",
            what: "VmRSS",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OHA: &str = r#"{"summary":{"successRate":1.0,"total":10.0,"slowest":0.01,
      "fastest":0.0001,"average":0.0003,"requestsPerSec":999.8,"totalData":10240,
      "sizePerRequest":1024,"sizePerSec":1023.0},
      "responseTimeHistogram":{"0.0001":3},
      "latencyPercentiles":{"p10":0.0001,"p25":0.0002,"p50":0.000250,"p75":0.0003,
      "p90":0.0004,"p95":0.0005,"p99":0.0012,"p99.9":0.002,"p99.99":0.003},
      "rps":{"mean":1000.0},"details":{},
      "statusCodeDistribution":{"200":9990,"503":10},"errorDistribution":{}}"#;

    #[test]
    fn oha_json_gives_microsecond_percentiles_and_non_200_count() {
        let r = oha_json(OHA).unwrap();
        assert!((r.p50_us - 250.0).abs() < 1e-6);
        assert!((r.p99_us - 1200.0).abs() < 1e-6);
        assert!((r.rps - 999.8).abs() < 1e-9);
        assert_eq!(r.non_200, 10);
        assert!(oha_json("not json").is_err());
    }

    #[test]
    fn oha_json_without_percentiles_is_an_error() {
        let text = r#"{"summary":{"successRate":0.0,"requestsPerSec":0.0},
            "latencyPercentiles":{"p50":null,"p99":null}}"#;
        assert!(matches!(
            oha_json(text),
            Err(ParseError::Missing { what: "p50", .. })
        ));
    }

    #[test]
    fn wrk_text_reads_rps_and_counts_errors() {
        let text = "Running 10s test @ http://127.0.0.1:8080/\n  1 threads and 10 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            \x20   Latency   120.00us   30.00us   2.00ms   90.00%\n\
            \x20 812345 requests in 10.00s, 900.00MB read\n\
            \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
            \x20 Non-2xx or 3xx responses: 4\n\
            Requests/sec:  81234.50\nTransfer/sec:     90.00MB\n";
        let r = wrk_text(text).unwrap();
        assert!((r.rps - 81234.5).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert!(wrk_text("nothing").is_err());
    }

    #[test]
    fn proc_stat_ticks_survive_spaces_and_parens_in_the_name() {
        let stat = "4242 (mesh (proxy) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    150 37 0 0 20 0 3 0 100 1000000 2500 18446744073709551615";
        let ticks = proc_stat_ticks(stat).unwrap();
        assert_eq!((ticks.user, ticks.system, ticks.total()), (150, 37, 187));
        assert!(proc_stat_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn proc_status_rss_is_read_in_kib() {
        let status = "Name:\tmesh-proxy\nVmPeak:\t  9000 kB\nVmRSS:\t    6144 kB\nThreads:\t3\n";
        assert_eq!(proc_status_rss_kib(status).unwrap(), 6144);
        assert!(proc_status_rss_kib("Name:\tx\n").is_err());
    }
}
