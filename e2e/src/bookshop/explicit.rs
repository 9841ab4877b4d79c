//! The book shop without root: every process on this host's loopback, each
//! sidecar in the proxy's explicit mode (`INTERCEPTION_MODE=NONE`, see
//! docs/xds.md "Explicit mode"). Apps send their upstream calls to their
//! sidecar's outbound port (`--via`) with the service in `Host`; callers'
//! sidecars dial the server's sidecar on its inbound port with mTLS, which
//! forwards to the app on its own port. Every port is picked free on
//! 127.0.0.1 at start.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Crash, PORT, REVIEWS_SUBSETS, Sidecar, Spec, WORKLOADS, upstream_url};
use crate::bins::{MESH_BINS, check_all, find_in, search_dirs};
use crate::mesh::{MeshError, WorkDir, http_get, poll, synced_count};

/// Ports of one explicit-mode workload.
#[derive(Debug, Clone, Copy)]
struct Ports {
    app: u16,
    inbound: u16,
    outbound: u16,
    admin: u16,
    health: u16,
    prometheus: u16,
    status: u16,
}

/// A free port on 127.0.0.1 (the listener is closed again; nothing else
/// on a loopback test machine races for it in practice).
fn free_port() -> Result<u16, MeshError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| MeshError::Io {
            what: "finding a free port on 127.0.0.1".into(),
            source,
        })
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> MeshError {
    move |source| MeshError::Io { what, source }
}

/// The loopback book shop: meshd and the workloads as plain processes.
#[derive(Debug)]
pub(super) struct ExplicitShop {
    dir: WorkDir,
    logs: PathBuf,
    bins: Vec<PathBuf>,
    procs: Vec<(String, Child)>,
    /// meshd's management API.
    pub(super) api: String,
    xds: String,
    ca: String,
    ca_dir: PathBuf,
    workloads: Vec<(Spec, Ports)>,
}

impl ExplicitShop {
    pub(super) fn start(
        work_dir: Option<&Path>,
        step: &mut dyn FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<ExplicitShop, MeshError> {
        let bins = search_dirs();
        check_all(&MESH_BINS, &bins)?;
        let dir = WorkDir::create(work_dir)?;
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
        let (xds, http, ca) = (free_port()?, free_port()?, free_port()?);
        let mut shop = ExplicitShop {
            ca_dir: dir.path().join("meshd").join("ca"),
            dir,
            logs,
            bins,
            procs: Vec::new(),
            api: format!("http://127.0.0.1:{http}"),
            xds: format!("http://127.0.0.1:{xds}"),
            ca: format!("https://127.0.0.1:{ca}"),
            workloads: Vec::new(),
        };
        let stop = || -> Result<(), MeshError> {
            if interrupted() {
                Err(MeshError::Unexpected {
                    what: "setting up the demo".into(),
                    detail: "interrupted".into(),
                })
            } else {
                Ok(())
            }
        };
        step(&format!(
            "meshd and its CA on 127.0.0.1 (xDS {xds}, CA {ca}, API {http})"
        ));
        let data = shop.dir.path().join("meshd").to_string_lossy().into_owned();
        let meshd = shop.bin("meshd")?;
        shop.spawn(
            "meshd",
            &[
                &meshd,
                "--data-dir",
                &data,
                "--xds-addr",
                &format!("127.0.0.1:{xds}"),
                "--http-addr",
                &format!("127.0.0.1:{http}"),
                "--ca-addr",
                &format!("127.0.0.1:{ca}"),
                "--debounce",
                "20ms",
            ],
            &[],
        )?;
        let ca_dir = shop.ca_dir.clone();
        poll(
            "meshd creating its CA",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                (ca_dir.join("join-token.key").exists() && ca_dir.join("root-cert.pem").exists())
                    .then_some(())
                    .ok_or_else(|| shop.log_tail("meshd", 20))
            },
        )?;
        step("DestinationRule reviews (subsets v1, v2)");
        shop.apply("reviews-subsets", REVIEWS_SUBSETS)?;
        for spec in WORKLOADS {
            stop()?;
            step(&format!(
                "{} with its sidecar in explicit mode on loopback",
                spec.name
            ));
            let ports = Ports {
                app: free_port()?,
                inbound: free_port()?,
                outbound: free_port()?,
                admin: free_port()?,
                health: free_port()?,
                prometheus: free_port()?,
                status: free_port()?,
            };
            shop.sidecar(spec, ports)?;
            shop.app(spec, ports)?;
            shop.workloads.push((spec, ports));
        }
        stop()?;
        step("waiting for the 5 sidecars to be SYNCED");
        let synced = poll(
            "5 proxies SYNCED",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let s = shop.syncz().map_err(|e| e.to_string())?;
                (synced_count(&s["proxies"]) == (WORKLOADS.len(), WORKLOADS.len()))
                    .then_some(())
                    .ok_or_else(|| s["proxies"].to_string())
            },
        );
        if let Err(e) = synced {
            return Err(match shop.crashed() {
                Some(c) => MeshError::ChildExited {
                    label: c.label,
                    pid: c.pid,
                    status: c.status,
                    during: e.to_string().lines().next().unwrap_or("").to_string(),
                    log_tail: c.log_tail,
                },
                None => e,
            });
        }
        Ok(shop)
    }

    fn bin(&self, name: &str) -> Result<String, MeshError> {
        Ok(find_in(name, &self.bins)?.to_string_lossy().into_owned())
    }

    fn spawn(
        &mut self,
        label: &str,
        argv: &[&str],
        env: &[(&str, String)],
    ) -> Result<u32, MeshError> {
        let path = self.logs.join(format!("{label}.log"));
        let log = fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io(format!("opening {}", path.display())))?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Its own process group: a terminal's Ctrl-C reaches the demo,
        // which then stops its children itself.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", argv.join(" "))))?;
        let pid = child.id();
        self.procs.push((label.to_string(), child));
        Ok(pid)
    }

    fn log_tail(&self, label: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub(super) fn apply(&self, name: &str, yaml: &str) -> Result<(), MeshError> {
        let path = self.dir.path().join(format!("{name}.yaml"));
        fs::write(&path, yaml).map_err(io(format!("writing {}", path.display())))?;
        let meshctl = self.bin("meshctl")?;
        poll(
            &format!("meshctl apply {name}"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let out = Command::new(&meshctl)
                    .args(["apply", "--meshd", &self.api, "-f"])
                    .arg(&path)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| e.to_string())?;
                out.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
            },
        )
    }

    fn token(&self, sa: &str) -> Result<String, MeshError> {
        let out = Command::new(self.bin("mesh-ca")?)
            .args(["token", "create", "--single-use", "--dir"])
            .arg(&self.ca_dir)
            .args([
                "--spiffe-id",
                &format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            ])
            .output()
            .map_err(io("running mesh-ca token create".into()))?;
        if !out.status.success() {
            return Err(MeshError::Unexpected {
                what: "mesh-ca token create".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn sidecar(&mut self, spec: Spec, p: Ports) -> Result<u32, MeshError> {
        let proxy = self.bin("mesh-proxy")?;
        let root = self.ca_dir.join("root-cert.pem");
        let token = self.token(spec.service)?;
        let labels = format!("app={},version={}", spec.service, spec.version);
        let ports = format!("http:{PORT}");
        let root = root.to_string_lossy().into_owned();
        let (xds, ca) = (self.xds.clone(), self.ca.clone());
        let argv = [
            proxy.as_str(),
            "run",
            "--xds-address",
            &xds,
            "--namespace",
            "default",
            "--service-account",
            spec.service,
            "--workload-name",
            spec.name,
            "--labels",
            &labels,
            "--instance-ip",
            "127.0.0.1",
            "--service-name",
            spec.service,
            "--service-ports",
            &ports,
            "--ca-address",
            &ca,
            "--ca-root-cert",
            &root,
            "--join-token",
            &token,
        ];
        // Ports by environment: a proxy built without one of these flags
        // (the status port is recent) still starts.
        let env = [
            ("INTERCEPTION_MODE", "NONE".to_string()),
            ("OUTBOUND_PORT", p.outbound.to_string()),
            ("INBOUND_PORT", p.inbound.to_string()),
            ("APP_PORT", p.app.to_string()),
            ("ADMIN_PORT", p.admin.to_string()),
            ("HEALTH_PORT", p.health.to_string()),
            ("PROMETHEUS_PORT", p.prometheus.to_string()),
            ("STATUS_PORT", p.status.to_string()),
        ];
        self.spawn(&format!("{}-proxy", spec.name), &argv, &env)
    }

    fn app(&mut self, spec: Spec, p: Ports) -> Result<u32, MeshError> {
        let app = self.bin("mesh-demo-app")?;
        let listen = format!("127.0.0.1:{}", p.app);
        let via = format!("127.0.0.1:{}", p.outbound);
        let mut argv = vec![
            app,
            "--service".into(),
            spec.service.into(),
            "--service-version".into(),
            spec.version.into(),
            "--listen".into(),
            listen,
            "--via".into(),
            via,
        ];
        for u in spec.upstreams {
            argv.extend(["--upstream".into(), upstream_url(u)]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.spawn(&format!("{}-app", spec.name), &argv, &[])
    }

    fn ports(&self, name: &str) -> Option<Ports> {
        self.workloads
            .iter()
            .find(|(s, _)| s.name == name)
            .map(|(_, p)| *p)
    }

    pub(super) fn outbound_proxy(&self, workload: &str) -> Option<String> {
        self.ports(workload)
            .map(|p| format!("http://127.0.0.1:{}", p.outbound))
    }

    /// productpage through its sidecar's inbound port.
    pub(super) fn productpage_url(&self) -> String {
        let port = self.ports("productpage-v1").map_or(0, |p| p.inbound);
        format!("http://127.0.0.1:{port}/productpage")
    }

    pub(super) fn start_traffic(&mut self, rps: u32) -> Result<(), MeshError> {
        let load = self.bin("mesh-load")?;
        let url = self.productpage_url();
        let (n, rps) = (u32::MAX.to_string(), rps.to_string());
        let argv = [
            load.as_str(),
            &url,
            "-n",
            &n,
            "--rps",
            &rps,
            "--concurrency",
            "4",
            "--timeout-ms",
            "3000",
        ];
        self.spawn("load", &argv, &[]).map(drop)
    }

    pub(super) fn syncz(&self) -> Result<serde_json::Value, MeshError> {
        let url = format!("{}/debug/syncz", self.api);
        let (status, body) = http_get(None, &url)?;
        let unexpected = |detail: String| MeshError::Unexpected {
            what: format!("GET {url}"),
            detail,
        };
        if status != 200 {
            return Err(unexpected(format!("status {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| unexpected(e.to_string()))
    }

    pub(super) fn sidecars(&self) -> Vec<Sidecar> {
        self.workloads
            .iter()
            .map(|(spec, p)| Sidecar {
                workload: spec.name.to_string(),
                service: spec.service.to_string(),
                metrics_url: format!("http://127.0.0.1:{}/stats/prometheus", p.prometheus),
                netns: None,
            })
            .collect()
    }

    pub(super) fn crashed(&mut self) -> Option<Crash> {
        let pos = self
            .procs
            .iter_mut()
            .position(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))?;
        let (label, mut child) = self.procs.remove(pos);
        let status = child.try_wait().ok().flatten()?;
        Some(Crash {
            log_tail: self.log_tail(&label, 15),
            pid: child.id(),
            label,
            status: status.to_string(),
        })
    }

    pub(super) fn processes(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(l, c)| (l.clone(), c.id()))
            .collect()
    }

    pub(super) fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn log_dir(&self) -> &Path {
        &self.logs
    }
}

impl Drop for ExplicitShop {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
