//! `meshctl demo` as a user runs it: the real binary as a child process, in
//! netns mode (root). It must show every proxy SYNCED and a summary with
//! traffic, exit by itself with `--duration`, and leave no namespace or
//! process behind; when one of its sidecars is killed it must say which and
//! clean up too.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;
use mesh_e2e::bookshop::{SERVICES, WORKLOADS};
use mesh_e2e::netns::e2e_available;

/// A running `meshctl demo` whose stdout and stderr are collected.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(workspace_bin("meshctl"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meshctl demo");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Demo {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits until stdout contains `text`.
    fn wait_for(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "demo exited ({status}) before printing {text:?}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} within {timeout:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the exit and returns the status code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers drain the pipes.
                let drained = Instant::now() + Duration::from_secs(2);
                while !self.stdout().contains("cleaned up") && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("demo still running after {timeout:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `--verbose` listing: namespaces and (label, pid) of processes.
    fn created(&self) -> (Vec<String>, Vec<(String, u32)>) {
        let out = self.stdout();
        let mut namespaces = Vec::new();
        let mut procs = Vec::new();
        let mut section = "";
        for line in out.lines() {
            match line {
                "namespaces:" | "processes:" => section = line,
                l if l.starts_with("  ") && section == "namespaces:" => {
                    namespaces.push(l.trim().to_string())
                }
                l if l.starts_with("  pid ") && section == "processes:" => {
                    let mut parts = l.split_whitespace().skip(1);
                    let pid = parts.next().unwrap().parse().unwrap();
                    procs.push((parts.next().unwrap().to_string(), pid));
                }
                _ => section = "",
            }
        }
        (namespaces, procs)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test must not leave the demo running: SIGTERM makes it
        // clean up after itself.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Nothing the demo created is left: namespaces gone, PIDs gone.
fn assert_cleaned_up(namespaces: &[String], procs: &[(String, u32)], output: &str) {
    // meshd, then a sidecar and an app per workload (the load starts later).
    assert_eq!(procs.len(), 1 + 2 * WORKLOADS.len(), "{procs:?}\n{output}");
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in namespaces {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} left behind:\n{listed}"
        );
        assert!(
            !std::path::Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left behind"
        );
    }
    for (label, pid) in procs {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{label} (pid {pid}) still running"
        );
    }
}

/// Runs `meshctl demo --mode <mode> --duration 15s --verbose` and checks
/// what it shows and that it leaves nothing behind.
fn demo_runs_shows_and_cleans_up(mode: &str) {
    let mut demo = Demo::start(&["--mode", mode, "--duration", "15s", "--verbose"]);
    let code = demo.wait_exit(Duration::from_secs(180));
    let out = demo.stdout();
    let all = demo.output();
    assert_eq!(code, Some(0), "{all}");
    assert!(out.contains(&format!("meshctl demo: {mode} mode")), "{all}");

    // proxy-status: the five workloads, each SYNCED on CDS, LDS, EDS, RDS.
    let status: Vec<&str> = out
        .split("$ meshctl proxy-status\n")
        .nth(1)
        .expect("proxy-status printed")
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(status[0].starts_with("NAME"), "{all}");
    for w in WORKLOADS {
        let row = status
            .iter()
            .find(|l| l.starts_with(w.name))
            .unwrap_or_else(|| panic!("{} not in proxy-status\n{all}", w.name));
        assert_eq!(row.matches("SYNCED").count(), 4, "{row}\n{all}");
    }

    // The summary: a row with traffic for every service.
    let summary: Vec<&str> = out
        .split("per service, as the server-side sidecars saw it")
        .nth(1)
        .expect("summary printed")
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(summary[0].starts_with("SERVICE"), "{all}");
    for service in SERVICES {
        let row = summary
            .iter()
            .find(|l| l.split_whitespace().next() == Some(service))
            .unwrap_or_else(|| panic!("no summary row for {service}\n{all}"));
        let requests: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(requests > 0.0, "{service} served nothing: {row}\n{all}");
    }
    // The sample chain shows callers' SPIFFE IDs (mTLS between sidecars).
    assert!(
        out.contains("caller spiffe://cluster.local/ns/default/sa/productpage"),
        "{all}"
    );
    assert!(
        out.contains("caller spiffe://cluster.local/ns/default/sa/reviews"),
        "{all}"
    );

    let (namespaces, procs) = demo.created();
    let expected = if mode == "netns" {
        1 + WORKLOADS.len()
    } else {
        0
    };
    assert_eq!(namespaces.len(), expected, "{all}");
    assert_cleaned_up(&namespaces, &procs, &all);
}

#[test]
fn demo_in_netns_mode_shows_synced_proxies_and_traffic_then_cleans_up() {
    if !e2e_available("demo_in_netns_mode_shows_synced_proxies_and_traffic_then_cleans_up") {
        return;
    }
    demo_runs_shows_and_cleans_up("netns");
}

#[test]
fn demo_reports_a_killed_sidecar_and_cleans_up() {
    if !e2e_available("demo_reports_a_killed_sidecar_and_cleans_up") {
        return;
    }
    let mut demo = Demo::start(&["--mode", "netns", "--verbose"]);
    demo.wait_for("the demo keeps running", Duration::from_secs(180));
    let (namespaces, procs) = demo.created();
    assert_eq!(namespaces.len(), 1 + WORKLOADS.len(), "{}", demo.output());
    let (label, pid) = procs
        .iter()
        .find(|(l, _)| l == "reviews-v2-proxy")
        .cloned()
        .unwrap_or_else(|| panic!("no reviews-v2-proxy in the listing\n{}", demo.output()));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let code = demo.wait_exit(Duration::from_secs(60));
    let all = demo.output();
    assert_ne!(code, Some(0), "{all}");
    let stderr = demo.stderr.lock().unwrap().clone();
    assert!(
        stderr.contains(&format!("{label} (pid {pid}) exited unexpectedly")),
        "{all}"
    );
    assert_cleaned_up(&namespaces, &procs, &all);
}

/// Explicit mode needs no root (all on loopback), so it runs everywhere;
/// as root too, which is how the suite runs it here.
#[test]
fn demo_in_explicit_mode_shows_callers_identities_and_cleans_up() {
    demo_runs_shows_and_cleans_up("explicit");
}
