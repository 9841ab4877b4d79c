//! A whole local mesh in network namespaces, for the e2e scenarios: meshd
//! (with its embedded CA) on the node, and workloads as pods, each with
//! `mesh-proxy init` rules, a sidecar as uid 1337 and the demo app.
//!
//! This is test support: setup failures panic with what went wrong and the
//! processes' logs, which is what a failing test should show.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins::workspace_bin;
use crate::load::LoadReport;
use crate::netns::{NODE_IP, Node, Pod};

fn bin(name: &str) -> String {
    workspace_bin(name).to_string_lossy().into_owned()
}

fn start_meshd(node: &mut Node, dir: &Path, label: &str) -> u32 {
    let data = dir.join("meshd");
    let ns = node.netns().to_string();
    node.spawn(
        label,
        &ns,
        None,
        &[
            &bin("meshd"),
            "--data-dir",
            &data.to_string_lossy(),
            "--xds-addr",
            &format!("{NODE_IP}:15010"),
            "--http-addr",
            &format!("{NODE_IP}:15014"),
            "--ca-addr",
            &format!("{NODE_IP}:15012"),
            "--debounce",
            "20ms",
        ],
        &[],
    )
    .expect("start meshd")
}

/// A workload to run in its own pod.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Pod (and workload) name, e.g. `reviews-v2`.
    pub name: &'a str,
    /// Service account: the SPIFFE ID is `.../ns/default/sa/<this>`.
    pub service_account: &'a str,
    /// The service it serves on port 9080 (demo app + registration), or
    /// `None` for a pure client.
    pub service: Option<&'a str>,
    /// `version` label and what the demo app reports.
    pub version: &'a str,
    /// Requested SVID lifetime in seconds (`None`: the CA's default).
    pub svid_ttl: Option<u64>,
}

/// The node, its CA and meshd.
#[derive(Debug)]
pub struct LocalMesh {
    /// The namespaces and processes.
    pub node: Node,
    /// meshd's management API, reachable from the node namespace.
    pub api: String,
    dir: tempfile::TempDir,
    ca_dir: PathBuf,
    meshd_pid: u32,
}

impl LocalMesh {
    /// Starts the CA and meshd in a fresh node namespace.
    pub fn start(test: &str) -> LocalMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        // meshd's embedded CA keeps its root and join-token key here.
        let ca_dir = dir.path().join("meshd").join("ca");
        let mut node = Node::create(test).expect("node namespace");
        let meshd_pid = start_meshd(&mut node, dir.path(), "meshd");
        // Tokens are made from the CA's key file, so wait until meshd has
        // created it (and the root the sidecars trust).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(ca_dir.join("join-token.key").exists() && ca_dir.join("root-cert.pem").exists()) {
            assert!(
                Instant::now() < deadline,
                "meshd never created its CA in {}\n{}",
                ca_dir.display(),
                node.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LocalMesh {
            node,
            api: format!("http://{NODE_IP}:15014"),
            dir,
            ca_dir,
            meshd_pid,
        }
    }

    /// Kills meshd (by PID), waits `down`, and starts it again on the same
    /// SQLite store: the control plane going away must not stop traffic.
    pub fn restart_meshd(&mut self, down: Duration) {
        self.node.kill(self.meshd_pid);
        std::thread::sleep(down);
        self.meshd_pid = start_meshd(&mut self.node, self.dir.path(), "meshd-restarted");
    }

    /// Applies YAML through `meshctl apply`, waiting for meshd to be up.
    pub fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write config");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.node.exec(
                self.node.netns(),
                &[
                    &bin("meshctl"),
                    "apply",
                    "--meshd",
                    &self.api,
                    "-f",
                    &path.to_string_lossy(),
                ],
            ) {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "meshctl apply {name}: {e}\n{}",
                    self.node.log_tail(20)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn token(&self, sa: &str) -> String {
        let out = std::process::Command::new(bin("mesh-ca"))
            .args([
                "token",
                "create",
                "--dir",
                &self.ca_dir.to_string_lossy(),
                "--single-use",
            ])
            .args([
                "--spiffe-id",
                &format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            ])
            .output()
            .expect("run mesh-ca token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Adds a pod running the workload: its app (when it serves), the
    /// interception rules and its sidecar.
    pub fn workload(&mut self, w: Workload<'_>) -> Pod {
        let pod = self.node.add_pod(w.name).expect("pod");
        if let Some(service) = w.service {
            self.node
                .spawn(
                    &format!("{}-app", w.name),
                    &pod.netns.clone(),
                    None,
                    &[
                        &bin("mesh-demo-app"),
                        "--service",
                        service,
                        "--service-version",
                        w.version,
                        "--listen",
                        "0.0.0.0:9080",
                    ],
                    &[],
                )
                .expect("start the app");
        }
        self.node
            .exec(&pod.netns, &[&bin("mesh-proxy"), "init"])
            .expect("mesh-proxy init");
        let root = self.ca_dir.join("root-cert.pem");
        let mut argv = vec![
            bin("mesh-proxy"),
            "run".into(),
            "--xds-address".into(),
            format!("http://{NODE_IP}:15010"),
            "--namespace".into(),
            "default".into(),
            "--service-account".into(),
            w.service_account.into(),
            "--workload-name".into(),
            w.name.into(),
            "--labels".into(),
            format!("app={},version={}", w.service.unwrap_or(w.name), w.version),
            "--instance-ip".into(),
            pod.ip.to_string(),
            "--ca-address".into(),
            format!("https://{NODE_IP}:15012"),
            "--ca-root-cert".into(),
            root.to_string_lossy().into_owned(),
            "--join-token".into(),
            self.token(w.service_account),
        ];
        if let Some(service) = w.service {
            argv.extend([
                "--service-name".into(),
                service.into(),
                "--service-ports".into(),
                "http:9080".into(),
            ]);
        }
        if let Some(ttl) = w.svid_ttl {
            argv.extend(["--svid-ttl".into(), ttl.to_string()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.node
            .spawn(
                &format!("{}-proxy", w.name),
                &pod.netns.clone(),
                Some(1337),
                &argv,
                &[],
            )
            .expect("start the sidecar");
        pod
    }

    /// Runs `mesh-load` in `pod` and returns its report.
    pub fn load(
        &self,
        pod: &Pod,
        url: &str,
        group_by: &str,
        requests: u32,
        rps: u32,
        headers: &[&str],
    ) -> LoadReport {
        let (n, rps) = (requests.to_string(), rps.to_string());
        let mut argv = vec![
            bin("mesh-load"),
            url.into(),
            "-n".into(),
            n,
            "--rps".into(),
            rps,
            "--concurrency".into(),
            "4".into(),
            "--timeout-ms".into(),
            "3000".into(),
            "--group-by".into(),
            group_by.into(),
        ];
        for h in headers {
            argv.extend(["-H".into(), (*h).into()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self.node.exec(&pod.netns, &argv).expect("run mesh-load");
        serde_json::from_slice(&out.stdout).expect("mesh-load prints JSON")
    }

    /// Starts `mesh-load` in `pod` in the background (a process of its
    /// own, so the test can restart meshd meanwhile); [`LocalMesh::wait_load`]
    /// collects its report.
    pub fn start_load(
        &mut self,
        pod: &Pod,
        label: &str,
        url: &str,
        requests: u32,
        rps: u32,
    ) -> PathBuf {
        let (n, rps) = (requests.to_string(), rps.to_string());
        let argv = [
            bin("mesh-load"),
            url.into(),
            "-n".into(),
            n,
            "--rps".into(),
            rps,
            "--concurrency".into(),
            "4".into(),
            "--timeout-ms".into(),
            "3000".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.node
            .spawn(label, &pod.netns.clone(), None, &argv, &[])
            .expect("start mesh-load");
        self.node.log_dir().join(format!("{label}.log"))
    }

    /// Waits for a background load's report.
    pub fn wait_load(&self, log: &Path, timeout: Duration) -> LoadReport {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(report) = text.lines().find_map(|l| serde_json::from_str(l).ok()) {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "load in {} never finished:\n{text}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The VIP meshd gave `host`, once its workloads registered.
    pub fn vip(&self, from: &Pod, host: &str) -> String {
        let pointer = format!("/services/{host}/vip");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.load(
                from,
                &format!("{}/debug/registryz", self.api),
                &pointer,
                1,
                0,
                &[],
            );
            if let Some(vip) = r.by_group.keys().find(|k| k.starts_with("240.")) {
                return vip.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{host} never registered: {r:?}\n{}",
                self.node.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `meshctl proxy-status -o json`.
    pub fn proxy_status(&self) -> serde_json::Value {
        let out = self
            .node
            .exec(
                self.node.netns(),
                &[
                    &bin("meshctl"),
                    "proxy-status",
                    "--meshd",
                    &self.api,
                    "-o",
                    "json",
                ],
            )
            .expect("meshctl proxy-status");
        serde_json::from_slice(&out.stdout).expect("proxy-status JSON")
    }

    /// Waits until `count` proxies are connected and SYNCED on every type.
    pub fn wait_synced(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.proxy_status();
            let all = status.as_array().cloned().unwrap_or_default();
            let synced = all
                .iter()
                .filter(|p| {
                    ["CDS", "LDS", "EDS", "RDS"]
                        .iter()
                        .all(|t| p["states"][*t] == "SYNCED")
                })
                .count();
            if all.len() == count && synced == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "want {count} proxies SYNCED: {status}\n{}",
                self.node.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Where the CA's files are.
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }
}
