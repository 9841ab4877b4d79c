//! The load generators: oha at a fixed rate with latency correction (the
//! latency figures) and wrk flat out (the throughput figures).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::BenchError;
use super::parse::{self, OhaRun, WrkRun};
use super::procs::pinned;

/// How a load run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Duration of the run.
    pub duration: Duration,
    /// Concurrent connections.
    pub connections: u32,
    /// Total requests per second (oha only).
    pub rate: u32,
}

fn output(tool: &str, cmd: &mut Command) -> Result<String, BenchError> {
    let out = cmd
        .output()
        .map_err(|e| BenchError::io(&format!("run {tool}"), e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(BenchError::Tool {
            tool: tool.into(),
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The oha command line for a fixed-rate run against `target`.
pub fn oha_args(target: SocketAddr, shape: Shape) -> Vec<String> {
    vec![
        "--no-tui".into(),
        "--output-format".into(),
        "json".into(),
        "-z".into(),
        format!("{}s", shape.duration.as_secs()),
        "-c".into(),
        shape.connections.to_string(),
        "-q".into(),
        shape.rate.to_string(),
        "--latency-correction".into(),
        format!("http://{target}/"),
    ]
}

/// Runs oha at a fixed rate against `target`, on `cpus` if set.
pub fn oha(
    bin: &Path,
    cpus: Option<&str>,
    target: SocketAddr,
    shape: Shape,
) -> Result<OhaRun, BenchError> {
    let text = output("oha", pinned(bin, cpus).args(oha_args(target, shape)))?;
    Ok(parse::oha_json(&text)?)
}

/// The wrk command line for a max-throughput run against `target`.
pub fn wrk_args(target: SocketAddr, shape: Shape) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{}", shape.connections),
        format!("-d{}s", shape.duration.as_secs()),
        format!("http://{target}/"),
    ]
}

/// Runs wrk flat out against `target`, on `cpus` if set.
pub fn wrk(
    bin: &Path,
    cpus: Option<&str>,
    target: SocketAddr,
    shape: Shape,
) -> Result<WrkRun, BenchError> {
    let text = output("wrk", pinned(bin, cpus).args(wrk_args(target, shape)))?;
    Ok(parse::wrk_text(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_carry_rate_connections_and_latency_correction() {
        let shape = Shape {
            duration: Duration::from_secs(10),
            connections: 10,
            rate: 1000,
        };
        let t: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let oha = oha_args(t, shape).join(" ");
        assert!(oha.contains("-q 1000"), "{oha}");
        assert!(oha.contains("-c 10"));
        assert!(oha.contains("--latency-correction"));
        assert!(oha.ends_with("http://127.0.0.1:8080/"));
        assert_eq!(
            wrk_args(t, shape).join(" "),
            "-t1 -c10 -d10s http://127.0.0.1:8080/"
        );
    }
}
