//! Processes under test: spawned (optionally pinned with `taskset`), killed
//! on drop, and watched through /proc for CPU time and resident memory.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::BenchError;
use super::figures::ProxyUsage;
use super::parse;

/// A free loopback port: bound on 127.0.0.1:0 and released. The tools
/// under test take ports on their command lines, so the port is picked
/// here and handed over (a tiny race with other programs, acceptable for a
/// benchmark, never done in tests).
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind 127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("local_addr", e))
}

/// A loopback address with a free port.
pub fn free_addr() -> Result<SocketAddr, BenchError> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A command running `program` on the CPU list `cpus` (through `taskset
/// -c`, which execs, so the pid is the program's), or unpinned.
pub fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `program args` pinned to `cpus` (see [`pinned`]), output to
    /// `log`.
    pub fn spawn(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let mut cmd = pinned(program, cpus);
        cmd.args(args).envs(envs.iter().copied());
        let out = std::fs::File::create(log).map_err(|e| BenchError::io("create log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::io("clone log", e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::io(&format!("spawn {}", program.display()), e))?;
        Ok(Self {
            name: name.into(),
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU ticks of `pid` (all its threads).
pub fn cpu_ticks(pid: u32) -> Result<parse::CpuTicks, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
    Ok(parse::proc_stat_ticks(&text)?)
}

/// Resident set size of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
    Ok(parse::proc_status_rss_kib(&text)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when unknown).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Watches some processes during one load run: CPU ticks at start and
/// stop, and the peak RSS sampled every 100 ms.
#[derive(Debug)]
pub struct Monitor {
    pids: Vec<u32>,
    start_ticks: Vec<parse::CpuTicks>,
    started: Instant,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<Vec<u64>>>,
}

impl Monitor {
    /// Starts watching `pids`.
    pub fn start(pids: &[u32]) -> Result<Self, BenchError> {
        let start_ticks = pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .collect::<Result<_, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let watched = pids.to_vec();
        let sampler = std::thread::spawn(move || {
            let mut peak = vec![0u64; watched.len()];
            while !flag.load(Ordering::Relaxed) {
                for (i, pid) in watched.iter().enumerate() {
                    if let Ok(kib) = rss_kib(*pid) {
                        peak[i] = peak[i].max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Ok(Self {
            pids: pids.to_vec(),
            start_ticks,
            started: Instant::now(),
            stop,
            sampler: Some(sampler),
        })
    }

    /// Stops watching: each process's usage and the wall time elapsed.
    pub fn stop(mut self, ticks_per_second: f64) -> Result<(Vec<ProxyUsage>, f64), BenchError> {
        let wall = self.started.elapsed().as_secs_f64();
        let end = self
            .pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .collect::<Result<Vec<_>, _>>()?;
        self.stop.store(true, Ordering::Relaxed);
        let peaks = self
            .sampler
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let usage = end
            .iter()
            .zip(&self.start_ticks)
            .enumerate()
            .map(|(i, (e, s))| ProxyUsage {
                cpu_seconds: e.total().saturating_sub(s.total()) as f64 / ticks_per_second,
                user_seconds: e.user.saturating_sub(s.user) as f64 / ticks_per_second,
                rss_peak_kib: peaks.get(i).copied().unwrap_or(0),
            })
            .collect();
        Ok((usage, wall))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One plain HTTP/1.1 GET over a new connection; true on a 200.
pub fn get_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// Polls `get_ok(addr)` until it succeeds or `timeout` passes; checks that
/// `procs` are still running in between.
pub fn wait_serving(
    what: &str,
    addr: SocketAddr,
    procs: &mut [&mut Proc],
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if get_ok(addr) {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if p.exited() {
                return Err(BenchError::NotReady(format!(
                    "{what}: {} exited (see its log)",
                    p.name
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BenchError::NotReady(format!(
        "{what}: no 200 from {addr} within {timeout:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_reads_this_process_cpu_and_rss() {
        let me = std::process::id();
        let m = Monitor::start(&[me]).unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(150) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (usage, wall) = m.stop(clock_ticks_per_second()).unwrap();
        assert!(x > 0);
        assert!(wall >= 0.15);
        assert!(usage[0].rss_peak_kib > 0);
        assert!(usage[0].cpu_seconds >= usage[0].user_seconds);
        assert!(usage[0].user_seconds >= 0.0);
    }
}
