//! A mesh without root: meshd (with its embedded CA) and explicit-mode
//! workloads (`mesh-proxy run --interception-mode NONE` + the demo app), all
//! plain processes on 127.0.0.1 with ports picked free at start. See
//! docs/xds.md, "Explicit mode", for what meshd emits for such sidecars.
//!
//! ```no_run
//! # fn main() -> Result<(), mesh_e2e::mesh::MeshError> {
//! use mesh_e2e::explicit::{ExplicitMesh, ExplicitWorkload};
//! let mut mesh = ExplicitMesh::start()?;
//! let reviews = mesh.workload(ExplicitWorkload::server("reviews-v1", "reviews", "v1"))?;
//! let page = mesh.workload(ExplicitWorkload {
//!     upstreams: vec!["http://reviews:9080/reviews".into()],
//!     ..ExplicitWorkload::server("productpage-v1", "productpage", "v1")
//! })?;
//! mesh.wait_synced(2)?;
//! // The app of productpage calls reviews through its sidecar:
//! let url = format!("http://127.0.0.1:{}/", page.app);
//! # let _ = (reviews, url);
//! # Ok(()) }
//! ```
//!
//! Dropping the mesh kills every process it started (by PID).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bins::{check_all, find_in, search_dirs};
use crate::bookshop::Crash;
use crate::mesh::{MeshError, WorkDir, excerpt, http_get, poll, synced_count};

/// The workload port every explicit workload serves (callers say
/// `http://<service>:9080/`); the app itself listens on [`Ports::app`].
pub const SERVICE_PORT: u16 = 9080;

/// Binaries an explicit mesh runs.
const BINS: [&str; 5] = ["meshd", "mesh-ca", "mesh-proxy", "mesh-demo-app", "meshctl"];

/// A free port on 127.0.0.1: bound, read and released (the process it is
/// given to binds it right after; acceptable on a test machine).
pub fn free_port() -> Result<u16, MeshError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| MeshError::Io {
            what: "finding a free port on 127.0.0.1".into(),
            source,
        })
}

/// The loopback ports of one explicit workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The demo app (the sidecar's `inbound|9080||` cluster points here).
    pub app: u16,
    /// The sidecar's `explicitInbound` listener (mTLS): what callers'
    /// sidecars dial, and the endpoint meshd registers.
    pub inbound: u16,
    /// The sidecar's `explicitOutbound` HTTP proxy port: the app's
    /// `HTTP_PROXY` / `--via`.
    pub outbound: u16,
    /// Admin (config dump).
    pub admin: u16,
    /// Health (`/healthz/ready`).
    pub health: u16,
    /// Proxy Prometheus metrics.
    pub prometheus: u16,
    /// Merged metrics (status) port.
    pub status: u16,
}

impl Ports {
    /// Ports picked free on 127.0.0.1 now.
    pub fn pick() -> Result<Ports, MeshError> {
        Ok(Ports {
            app: free_port()?,
            inbound: free_port()?,
            outbound: free_port()?,
            admin: free_port()?,
            health: free_port()?,
            prometheus: free_port()?,
            status: free_port()?,
        })
    }
}

/// One workload to start: a sidecar in explicit mode, and the demo app
/// when it serves a service.
#[derive(Debug, Clone, Default)]
pub struct ExplicitWorkload {
    /// Workload name, e.g. `reviews-v1` (also the process labels).
    pub name: String,
    /// Service account: the SPIFFE ID is `spiffe://cluster.local/ns/default/sa/<this>`.
    pub service_account: String,
    /// The service served on [`SERVICE_PORT`] (registration + demo app);
    /// `None` for a client that only calls out (no app, no inbound).
    pub service: Option<String>,
    /// `version` label and what the demo app reports.
    pub version: String,
    /// Upstream URLs the demo app calls on each request
    /// (`http://reviews:9080/...`), through its sidecar.
    pub upstreams: Vec<String>,
    /// `region/zone/subzone` the sidecar reports as its `node.locality`
    /// (`--locality`); `None` for none.
    pub locality: Option<String>,
}

impl ExplicitWorkload {
    /// A workload serving `service` (service account = service name).
    pub fn server(name: &str, service: &str, version: &str) -> Self {
        ExplicitWorkload {
            name: name.into(),
            service_account: service.into(),
            service: Some(service.into()),
            version: version.into(),
            upstreams: Vec::new(),
            locality: None,
        }
    }
}

/// meshd and explicit-mode workloads as plain processes on loopback.
#[derive(Debug)]
pub struct ExplicitMesh {
    dir: WorkDir,
    logs: PathBuf,
    bins: Vec<PathBuf>,
    procs: Vec<(String, Child)>,
    /// meshd's management API (`/debug/syncz`, `meshctl --meshd`).
    pub api: String,
    /// meshd's plaintext xDS address.
    pub xds: String,
    /// meshd's CA (and xDS over mTLS) address.
    pub ca: String,
    ca_dir: PathBuf,
    own_process_group: bool,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> MeshError {
    move |source| MeshError::Io { what, source }
}

/// What a sidecar logs once it has bound its admin, health and Prometheus
/// ports.
const PROXY_STARTED: &str = "connecting to the control plane";

/// What the demo app logs once it listens.
const APP_STARTED: &str = "listening on";

/// How often a workload is started again with other ports when one picked
/// free was taken before the process bound it (another process's outgoing
/// connection can get it as its ephemeral port in between).
const PORT_RETRIES: usize = 3;

impl ExplicitMesh {
    /// Starts meshd with its CA on free loopback ports (temp work dir) and
    /// waits for the CA's files.
    pub fn start() -> Result<ExplicitMesh, MeshError> {
        Self::start_in(None, &BINS, false)
    }

    /// [`ExplicitMesh::start`] in `work_dir` (a temp dir when `None`),
    /// after checking that the `required` binaries exist. With
    /// `own_process_group`, children do not get a terminal's Ctrl-C (the
    /// caller stops them itself, as `meshctl demo` does).
    pub fn start_in(
        work_dir: Option<&Path>,
        required: &[&str],
        own_process_group: bool,
    ) -> Result<ExplicitMesh, MeshError> {
        let bins = search_dirs();
        check_all(required, &bins)?;
        let dir = WorkDir::create(work_dir)?;
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
        let (xds, http, ca) = (free_port()?, free_port()?, free_port()?);
        let mut mesh = ExplicitMesh {
            ca_dir: dir.path().join("meshd").join("ca"),
            dir,
            logs,
            bins,
            procs: Vec::new(),
            api: format!("http://127.0.0.1:{http}"),
            xds: format!("http://127.0.0.1:{xds}"),
            ca: format!("https://127.0.0.1:{ca}"),
            own_process_group,
        };
        let data = mesh.dir.path().join("meshd").to_string_lossy().into_owned();
        let argv = [
            mesh.bin("meshd")?,
            "--data-dir".into(),
            data,
            "--xds-addr".into(),
            format!("127.0.0.1:{xds}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
            "--ca-addr".into(),
            format!("127.0.0.1:{ca}"),
            "--debounce".into(),
            "20ms".into(),
        ];
        mesh.spawn("meshd", &argv, &[])?;
        let ca_dir = mesh.ca_dir.clone();
        poll(
            "meshd creating its CA",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                (ca_dir.join("join-token.key").exists() && ca_dir.join("root-cert.pem").exists())
                    .then_some(())
                    .ok_or_else(|| mesh.log_tail("meshd", 20))
            },
        )?;
        Ok(mesh)
    }

    /// The path of binary `name` (see [`crate::bins`]).
    pub fn bin(&self, name: &str) -> Result<String, MeshError> {
        Ok(find_in(name, &self.bins)?.to_string_lossy().into_owned())
    }

    /// Starts `argv` with its output in `logs/<label>.log`; the mesh kills
    /// it (by PID) when dropped. Returns the PID.
    pub fn spawn(
        &mut self,
        label: &str,
        argv: &[String],
        env: &[(&str, String)],
    ) -> Result<u32, MeshError> {
        let path = self.logs.join(format!("{label}.log"));
        let log = fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io(format!("opening {}", path.display())))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            // An error a process exits with reads better without a
            // backtrace (panics keep theirs, under RUST_BACKTRACE).
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", argv.join(" "))))?;
        let pid = child.id();
        self.procs.push((label.to_string(), child));
        Ok(pid)
    }

    /// The last `lines` lines of a process's log (`meshd`, `<name>-proxy`,
    /// `<name>-app`).
    pub fn log_tail(&self, label: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default();
        excerpt(&text, lines)
    }

    /// Every process's log tail, for a failing test's message.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(l, _)| format!("--- {l}\n{}\n", self.log_tail(l, 15)))
            .collect()
    }

    /// Applies YAML with `meshctl apply`, retrying until meshd answers.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<(), MeshError> {
        let path = self.dir.path().join(format!("{name}.yaml"));
        fs::write(&path, yaml).map_err(io(format!("writing {}", path.display())))?;
        let meshctl = find_in("meshctl", &self.bins)?;
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

    /// Starts `w`'s sidecar in explicit mode (SVID from meshd's CA with a
    /// join token) and, when it serves a service, the demo app on its own
    /// port calling its upstreams through the sidecar. Returns its ports.
    pub fn workload(&mut self, w: ExplicitWorkload) -> Result<Ports, MeshError> {
        let mut tries = 0;
        loop {
            match self.start_workload(&w, Ports::pick()?) {
                Err(MeshError::ChildExited { log_tail, .. })
                    if tries < PORT_RETRIES && log_tail.contains("Address already in use") =>
                {
                    tries += 1;
                }
                result => return result,
            }
        }
    }

    /// One start of `w` on the ports `p`: its sidecar, then its app, each
    /// waited for until it has bound its ports. Whatever of it started is
    /// stopped again when a process exits instead
    /// ([`MeshError::ChildExited`]).
    pub fn start_workload(&mut self, w: &ExplicitWorkload, p: Ports) -> Result<Ports, MeshError> {
        let service = w.service.clone().unwrap_or_else(|| w.name.clone());
        let mut argv = vec![
            self.bin("mesh-proxy")?,
            "run".into(),
            "--xds-address".into(),
            self.xds.clone(),
            "--interception-mode".into(),
            "NONE".into(),
            "--outbound-port".into(),
            p.outbound.to_string(),
            "--inbound-port".into(),
            p.inbound.to_string(),
            "--app-port".into(),
            p.app.to_string(),
            "--namespace".into(),
            "default".into(),
            "--service-account".into(),
            w.service_account.clone(),
            "--workload-name".into(),
            w.name.clone(),
            "--labels".into(),
            format!("app={service},version={}", w.version),
            "--instance-ip".into(),
            "127.0.0.1".into(),
            "--ca-address".into(),
            self.ca.clone(),
            "--ca-root-cert".into(),
            self.ca_dir.join("root-cert.pem").to_string_lossy().into(),
            "--join-token".into(),
            self.token(&w.service_account)?,
        ];
        if let Some(locality) = &w.locality {
            argv.extend(["--locality".into(), locality.clone()]);
        }
        if let Some(svc) = &w.service {
            argv.extend([
                "--service-name".into(),
                svc.clone(),
                "--service-ports".into(),
                format!("http:{SERVICE_PORT}"),
            ]);
        }
        let env = [
            ("ADMIN_PORT", p.admin.to_string()),
            ("HEALTH_PORT", p.health.to_string()),
            ("PROMETHEUS_PORT", p.prometheus.to_string()),
            ("STATUS_PORT", p.status.to_string()),
        ];
        let proxy = format!("{}-proxy", w.name);
        self.spawn(&proxy, &argv, &env)?;
        self.wait_started(&proxy, PROXY_STARTED)?;
        if w.service.is_some() {
            let mut argv = vec![
                self.bin("mesh-demo-app")?,
                "--service".into(),
                service,
                "--service-version".into(),
                w.version.clone(),
                "--listen".into(),
                format!("127.0.0.1:{}", p.app),
                "--via".into(),
                format!("127.0.0.1:{}", p.outbound),
            ];
            for u in &w.upstreams {
                argv.extend(["--upstream".into(), u.clone()]);
            }
            let app = format!("{}-app", w.name);
            self.spawn(&app, &argv, &[])?;
            if let Err(e) = self.wait_started(&app, APP_STARTED) {
                self.stop(&proxy);
                return Err(e);
            }
        }
        Ok(p)
    }

    /// Waits until `label`'s log shows `started`; a process that exits
    /// first is taken out of the list and reported as
    /// [`MeshError::ChildExited`].
    fn wait_started(&mut self, label: &str, started: &str) -> Result<(), MeshError> {
        let path = self.logs.join(format!("{label}.log"));
        let procs = &mut self.procs;
        let exited = poll(
            &format!("{label} starting"),
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                let log = fs::read_to_string(&path).unwrap_or_default();
                if log.contains(started) {
                    return Ok(None);
                }
                let child = procs.iter_mut().find(|(l, _)| l == label);
                match child.map(|(_, c)| c.try_wait()) {
                    Some(Ok(Some(status))) => Ok(Some(status)),
                    _ => Err(excerpt(&log, 15)),
                }
            },
        )?;
        let Some(status) = exited else {
            return Ok(());
        };
        let log_tail = self.log_tail(label, 15);
        let pid = self.stop(label).unwrap_or_default();
        Err(MeshError::ChildExited {
            label: label.to_owned(),
            pid,
            status: status.to_string(),
            during: "starting".into(),
            log_tail,
        })
    }

    /// Stops `label` (by its PID) and takes it out of the list; its PID.
    fn stop(&mut self, label: &str) -> Option<u32> {
        let pos = self.procs.iter().position(|(l, _)| l == label)?;
        let (_, mut child) = self.procs.remove(pos);
        let _ = child.kill();
        let _ = child.wait();
        Some(child.id())
    }

    /// meshd's `/debug/syncz`.
    pub fn syncz(&self) -> Result<serde_json::Value, MeshError> {
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

    /// Waits until `count` proxies are connected and SYNCED.
    pub fn wait_synced(&self, count: usize) -> Result<(), MeshError> {
        poll(
            &format!("{count} proxies SYNCED"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let s = self.syncz().map_err(|e| e.to_string())?;
                (synced_count(&s["proxies"]) == (count, count))
                    .then_some(())
                    .ok_or_else(|| format!("{}\n{}", s["proxies"], self.logs()))
            },
        )
    }

    /// The work directory (meshd's store and CA, `logs/`).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where each process's log is (`<label>.log`).
    pub fn log_dir(&self) -> &Path {
        &self.logs
    }

    /// Every process started, as (label, PID).
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(l, c)| (l.clone(), c.id()))
            .collect()
    }

    /// A process that has exited (taken out of the list), if any.
    pub fn crashed(&mut self) -> Option<Crash> {
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
}

impl Drop for ExplicitMesh {
    fn drop(&mut self) {
        // Apps first, meshd last; each by its own PID.
        for (_, child) in self.procs.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
