//! A whole local mesh in network namespaces: meshd (with its embedded CA) on
//! the node, and workloads as pods, each with `mesh-proxy init` rules, a
//! sidecar as uid 1337 and the demo app.
//!
//! [`NetnsMesh`] is fallible (every step returns a [`MeshError`] that says
//! what to do next): `meshctl demo` runs on it. [`LocalMesh`] is the e2e
//! tests' wrapper: the same steps, panicking with the processes' logs, which
//! is what a failing test should show.

use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::bins::{BinNotFound, MESH_BINS, check_all, find_in, search_dirs};
use crate::load::LoadReport;
use crate::netns::{HarnessError, NODE_IP, Node, Pod, in_netns};

/// Why the local mesh could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A binary is missing (the message says how to build it).
    #[error(transparent)]
    Bin(#[from] BinNotFound),
    /// Creating namespaces or starting a process failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// Creating the work directory or a config file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("{what} within {secs}s: {detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        secs: u64,
        /// The last thing seen.
        detail: String,
    },
    /// A process the mesh started exited while the mesh waited on it.
    #[error(
        "{label} (pid {pid}) exited unexpectedly ({status}) while {during}; the last lines of its log:\n{log_tail}"
    )]
    ChildExited {
        /// The process's label, e.g. `reviews-v2-proxy`.
        label: String,
        /// Its PID.
        pid: u32,
        /// How it ended.
        status: String,
        /// What was being waited for (the first line of that error).
        during: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A tool answered something unexpected.
    #[error("{what}: {detail}")]
    Unexpected {
        /// What was being done.
        what: String,
        /// What came back.
        detail: String,
    },
}

/// GETs `url` (plain HTTP) from inside network namespace `netns` (the
/// calling thread's own namespace when `None`) and returns status and body.
pub fn http_get(netns: Option<&str>, url: &str) -> Result<(u16, String), MeshError> {
    http_call(netns, "GET", url, String::new())
}

/// Sends one plain HTTP request from inside `netns` (or from here).
pub fn http_call(
    netns: Option<&str>,
    method: &str,
    url: &str,
    body: String,
) -> Result<(u16, String), MeshError> {
    let unexpected = |detail: String| MeshError::Unexpected {
        what: format!("{method} {url}"),
        detail,
    };
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(hyper::header::CONTENT_TYPE, "application/yaml")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| unexpected(e.to_string()))?;
    let fetch = move || async move {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let call = async {
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| Err("timed out after 5s".into()))
    };
    let result = match netns {
        Some(ns) => in_netns(ns, fetch)?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unexpected(e.to_string()))?
            .block_on(fetch()),
    };
    result.map_err(unexpected)
}

/// The last `lines` lines of a log, after its first error or panic message
/// when that is further up (a backtrace would otherwise push it out).
pub fn excerpt(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let tail_from = all.len().saturating_sub(lines);
    let first_error = all
        .iter()
        .position(|l| l.starts_with("Error: ") || l.contains("panicked at"));
    match first_error {
        Some(i) if i < tail_from => {
            let head = &all[i..(i + 4).min(tail_from)];
            format!(
                "{}\n[...]\n{}",
                head.join("\n"),
                all[tail_from..].join("\n")
            )
        }
        _ => all[tail_from..].join("\n"),
    }
}

/// Polls `check` every `every` until it returns `Some`, or fails after
/// `timeout` with the last detail it gave.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, MeshError> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(detail) if Instant::now() >= deadline => {
                return Err(MeshError::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs(),
                    detail,
                });
            }
            Err(_) => std::thread::sleep(every),
        }
    }
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

impl<'a> Workload<'a> {
    /// A pure client `name` (service account `name`, version `v1`).
    pub fn client(name: &'a str) -> Self {
        Workload {
            name,
            service_account: name,
            service: None,
            version: "v1",
            svid_ttl: None,
        }
    }

    /// Workload `name` serving the service `name` (service account
    /// `name`, version `v1`).
    pub fn server(name: &'a str) -> Self {
        Workload {
            service: Some(name),
            ..Workload::client(name)
        }
    }
}

/// Paths of the binaries the mesh runs, resolved once at start.
#[derive(Debug, Clone)]
struct Bins {
    dirs: Vec<PathBuf>,
}

impl Bins {
    fn path(&self, name: &str) -> Result<String, MeshError> {
        Ok(find_in(name, &self.dirs)?.to_string_lossy().into_owned())
    }
}

/// The work directory: a temp dir removed on drop, or the user's.
#[derive(Debug)]
pub(crate) enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    /// `dir` (created, kept) or a new temp dir (removed on drop).
    pub(crate) fn create(dir: Option<&Path>) -> Result<WorkDir, MeshError> {
        Ok(match dir {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|source| MeshError::Io {
                    what: format!("creating {}", p.display()),
                    source,
                })?;
                WorkDir::Kept(p.to_path_buf())
            }
            None => WorkDir::Temp(tempfile::tempdir().map_err(|source| MeshError::Io {
                what: "creating a temp dir".into(),
                source,
            })?),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

/// The node, meshd and its CA, and the pods added to it: fallible.
/// Dropping it kills every process it started (by PID) and deletes its
/// namespaces; a temp work dir goes too.
#[derive(Debug)]
pub struct NetnsMesh {
    /// The namespaces and processes.
    pub node: Node,
    /// meshd's management API, reachable from the node namespace.
    pub api: String,
    dir: WorkDir,
    ca_dir: PathBuf,
    meshd_pid: u32,
    bins: Bins,
}

fn start_meshd(node: &mut Node, bins: &Bins, dir: &Path, label: &str) -> Result<u32, MeshError> {
    let data = dir.join("meshd");
    let ns = node.netns().to_string();
    Ok(node.spawn(
        label,
        &ns,
        None,
        &[
            &bins.path("meshd")?,
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
    )?)
}

impl NetnsMesh {
    /// Starts meshd (with its CA) in a fresh node namespace. `work_dir`
    /// keeps meshd's store, CA and config there; `None` uses a temp dir
    /// removed on drop. Every binary is located first, so a missing one is
    /// reported before anything is created.
    pub fn start(label: &str, work_dir: Option<&Path>) -> Result<NetnsMesh, MeshError> {
        let bins = Bins {
            dirs: search_dirs(),
        };
        check_all(&MESH_BINS, &bins.dirs)?;
        let dir = WorkDir::create(work_dir)?;
        // meshd's embedded CA keeps its root and join-token key here.
        let ca_dir = dir.path().join("meshd").join("ca");
        let mut node = Node::create(label)?;
        let meshd_pid = start_meshd(&mut node, &bins, dir.path(), "meshd")?;
        // Tokens are made from the CA's key file, so wait until meshd has
        // created it (and the root the sidecars trust).
        poll(
            "meshd creating its CA",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                if ca_dir.join("join-token.key").exists() && ca_dir.join("root-cert.pem").exists() {
                    Ok(())
                } else {
                    Err(format!(
                        "no CA in {}\n{}",
                        ca_dir.display(),
                        node.log_tail_of("meshd", 20)
                    ))
                }
            },
        )?;
        Ok(NetnsMesh {
            node,
            api: format!("http://{NODE_IP}:15014"),
            dir,
            ca_dir,
            meshd_pid,
            bins,
        })
    }

    /// The work directory (meshd's store and CA under `meshd/`).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// meshd's PID.
    pub fn meshd_pid(&self) -> u32 {
        self.meshd_pid
    }

    /// Path of one of the mesh's binaries.
    pub fn bin(&self, name: &str) -> Result<String, MeshError> {
        self.bins.path(name)
    }

    /// Kills meshd (by PID), waits `down`, and starts it again on the same
    /// SQLite store: the control plane going away must not stop traffic.
    pub fn restart_meshd(&mut self, down: Duration) -> Result<(), MeshError> {
        self.node.kill(self.meshd_pid);
        std::thread::sleep(down);
        self.meshd_pid = start_meshd(
            &mut self.node,
            &self.bins,
            self.dir.path(),
            "meshd-restarted",
        )?;
        Ok(())
    }

    /// Applies YAML through `meshctl apply`, waiting for meshd to be up.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<(), MeshError> {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).map_err(|source| MeshError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        let meshctl = self.bins.path("meshctl")?;
        let file = path.to_string_lossy().into_owned();
        poll(
            &format!("meshctl apply {name}"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                self.node
                    .exec(
                        self.node.netns(),
                        &[&meshctl, "apply", "--meshd", &self.api, "-f", &file],
                    )
                    .map(drop)
                    .map_err(|e| format!("{e}\n{}", self.node.log_tail_of("meshd", 20)))
            },
        )
    }

    fn token(&self, sa: &str) -> Result<String, MeshError> {
        let out = std::process::Command::new(self.bins.path("mesh-ca")?)
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
            .map_err(|source| MeshError::Io {
                what: "running mesh-ca token create".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(MeshError::Unexpected {
                what: "mesh-ca token create".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Adds a pod running the workload: its app (when it serves), the
    /// interception rules and its sidecar.
    pub fn workload(&mut self, w: Workload<'_>) -> Result<Pod, MeshError> {
        let pod = self.node.add_pod(w.name)?;
        if let Some(service) = w.service {
            self.start_app(&pod, w.name, service, w.version, &[])?;
        }
        self.sidecar(&pod, w)?;
        Ok(pod)
    }

    /// Starts the demo app in `pod` on port 9080, serving `service` at
    /// `version` and calling `upstreams` on every request.
    pub fn start_app(
        &mut self,
        pod: &Pod,
        name: &str,
        service: &str,
        version: &str,
        upstreams: &[String],
    ) -> Result<u32, MeshError> {
        let mut argv = vec![
            self.bins.path("mesh-demo-app")?,
            "--service".into(),
            service.into(),
            "--service-version".into(),
            version.into(),
            "--listen".into(),
            "0.0.0.0:9080".into(),
        ];
        for u in upstreams {
            argv.extend(["--upstream".into(), u.clone()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(self
            .node
            .spawn(&format!("{name}-app"), &pod.netns, None, &argv, &[])?)
    }

    /// Writes the interception rules in `pod` and starts its sidecar as
    /// uid 1337, registered as `w` (a service on `http:9080`).
    pub fn sidecar(&mut self, pod: &Pod, w: Workload<'_>) -> Result<u32, MeshError> {
        self.sidecar_serving(pod, w, "http:9080")
    }

    /// [`NetnsMesh::sidecar`] for a service on `ports`
    /// (`MESH_SERVICE_PORTS` syntax, e.g. `tcp:9000`).
    pub fn sidecar_serving(
        &mut self,
        pod: &Pod,
        w: Workload<'_>,
        ports: &str,
    ) -> Result<u32, MeshError> {
        let proxy = self.bins.path("mesh-proxy")?;
        self.node.exec(&pod.netns, &[&proxy, "init"])?;
        let root = self.ca_dir.join("root-cert.pem");
        let mut argv = vec![
            proxy,
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
            self.token(w.service_account)?,
        ];
        if let Some(service) = w.service {
            argv.extend([
                "--service-name".into(),
                service.into(),
                "--service-ports".into(),
                ports.into(),
            ]);
        }
        if let Some(ttl) = w.svid_ttl {
            argv.extend(["--svid-ttl".into(), ttl.to_string()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(self.node.spawn(
            &format!("{}-proxy", w.name),
            &pod.netns.clone(),
            Some(1337),
            &argv,
            &[],
        )?)
    }

    fn load_argv(
        &self,
        url: &str,
        requests: u32,
        rps: u32,
        group_by: &str,
    ) -> Result<Vec<String>, MeshError> {
        Ok(vec![
            self.bins.path("mesh-load")?,
            url.into(),
            "-n".into(),
            requests.to_string(),
            "--rps".into(),
            rps.to_string(),
            "--concurrency".into(),
            "4".into(),
            "--timeout-ms".into(),
            "3000".into(),
            "--group-by".into(),
            group_by.into(),
        ])
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
    ) -> Result<LoadReport, MeshError> {
        let mut argv = self.load_argv(url, requests, rps, group_by)?;
        for h in headers {
            argv.extend(["-H".into(), (*h).into()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self.node.exec(&pod.netns, &argv)?;
        serde_json::from_slice(&out.stdout).map_err(|e| MeshError::Unexpected {
            what: "mesh-load's report".into(),
            detail: e.to_string(),
        })
    }

    /// Starts `mesh-load` in namespace `netns` in the background (a process
    /// of its own); [`NetnsMesh::wait_load`] collects its report from the
    /// returned log path.
    pub fn start_load_in(
        &mut self,
        netns: &str,
        label: &str,
        url: &str,
        requests: u32,
        rps: u32,
    ) -> Result<PathBuf, MeshError> {
        let argv = self.load_argv(url, requests, rps, "/version")?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.node.spawn(label, netns, None, &argv, &[])?;
        Ok(self.node.log_dir().join(format!("{label}.log")))
    }

    /// Waits for a background load's report.
    pub fn wait_load(&self, log: &Path, timeout: Duration) -> Result<LoadReport, MeshError> {
        poll(
            &format!("the load in {} finishing", log.display()),
            timeout,
            Duration::from_millis(200),
            || {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                text.lines()
                    .find_map(|l| serde_json::from_str(l).ok())
                    .ok_or(text)
            },
        )
    }

    /// The VIP meshd gave `host`, once its workloads registered, asked from
    /// namespace `netns`.
    pub fn vip_from(&self, netns: &str, host: &str) -> Result<Ipv4Addr, MeshError> {
        let url = format!("{}/debug/registryz", self.api);
        poll(
            &format!("{host} registering"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let (_, body) = http_get(Some(netns), &url).map_err(|e| e.to_string())?;
                let v: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                v.pointer(&format!("/services/{host}/vip"))
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not in the registry yet: {body}"))
            },
        )
    }

    /// meshd's `/debug/syncz` (what `meshctl proxy-status` shows).
    pub fn syncz(&self) -> Result<serde_json::Value, MeshError> {
        let url = format!("{}/debug/syncz", self.api);
        let (status, body) = http_get(Some(self.node.netns()), &url)?;
        let unexpected = |detail: String| MeshError::Unexpected {
            what: format!("GET {url}"),
            detail,
        };
        if status != 200 {
            return Err(unexpected(format!("status {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| unexpected(e.to_string()))
    }

    /// `meshctl proxy-status -o json`, run in the node namespace.
    pub fn proxy_status(&self) -> Result<serde_json::Value, MeshError> {
        let out = self.node.exec(
            self.node.netns(),
            &[
                &self.bins.path("meshctl")?,
                "proxy-status",
                "--meshd",
                &self.api,
                "-o",
                "json",
            ],
        )?;
        serde_json::from_slice(&out.stdout).map_err(|e| MeshError::Unexpected {
            what: "meshctl proxy-status -o json".into(),
            detail: e.to_string(),
        })
    }

    /// Waits until `count` proxies are connected and SYNCED on every type.
    pub fn wait_synced(&self, count: usize) -> Result<(), MeshError> {
        poll(
            &format!("{count} proxies SYNCED"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let status = self.syncz().map_err(|e| e.to_string())?;
                if synced_count(&status["proxies"]) == (count, count) {
                    Ok(())
                } else {
                    Err(status["proxies"].to_string())
                }
            },
        )
    }

    /// Where the CA's files are.
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }
}

/// Replaces `err` by [`MeshError::ChildExited`] when one of `node`'s
/// processes has exited: a dead sidecar explains a timeout better than the
/// timeout does.
pub fn or_child_exited(node: &mut Node, err: MeshError) -> MeshError {
    match node.exited() {
        Some(e) => MeshError::ChildExited {
            log_tail: node.log_tail_of(&e.label, 15),
            label: e.label,
            pid: e.pid,
            status: e.status.to_string(),
            during: err.to_string().lines().next().unwrap_or("").to_string(),
        },
        None => err,
    }
}

/// (connected, SYNCED on CDS, LDS, EDS and RDS) among `proxies` (a
/// proxy-status JSON array).
pub fn synced_count(proxies: &serde_json::Value) -> (usize, usize) {
    let all = proxies.as_array().cloned().unwrap_or_default();
    let synced = all
        .iter()
        .filter(|p| {
            ["CDS", "LDS", "EDS", "RDS"]
                .iter()
                .all(|t| p["states"][*t] == "SYNCED")
        })
        .count();
    (all.len(), synced)
}

/// The e2e tests' mesh: [`NetnsMesh`] whose steps panic with the logs.
#[derive(Debug)]
pub struct LocalMesh {
    inner: NetnsMesh,
}

impl Deref for LocalMesh {
    type Target = NetnsMesh;
    fn deref(&self) -> &NetnsMesh {
        &self.inner
    }
}

impl DerefMut for LocalMesh {
    fn deref_mut(&mut self) -> &mut NetnsMesh {
        &mut self.inner
    }
}

impl LocalMesh {
    fn ok<T>(&self, what: &str, r: Result<T, MeshError>) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.inner.node.log_tail(20)))
    }

    /// Starts the CA and meshd in a fresh node namespace.
    pub fn start(test: &str) -> LocalMesh {
        let inner = NetnsMesh::start(test, None).unwrap_or_else(|e| panic!("start: {e}"));
        LocalMesh { inner }
    }

    /// Kills meshd (by PID), waits `down`, and starts it again on the same
    /// SQLite store.
    pub fn restart_meshd(&mut self, down: Duration) {
        let r = self.inner.restart_meshd(down);
        self.ok("restart meshd", r)
    }

    /// Applies YAML through `meshctl apply`, waiting for meshd to be up.
    pub fn apply(&self, name: &str, yaml: &str) {
        self.ok("apply", self.inner.apply(name, yaml))
    }

    /// Adds a pod running the workload: its app (when it serves), the
    /// interception rules and its sidecar.
    pub fn workload(&mut self, w: Workload<'_>) -> Pod {
        let r = self.inner.workload(w);
        self.ok("workload", r)
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
        let r = self.inner.load(pod, url, group_by, requests, rps, headers);
        self.ok("mesh-load", r)
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
        let r = self
            .inner
            .start_load_in(&pod.netns, label, url, requests, rps);
        self.ok("start mesh-load", r)
    }

    /// Waits for a background load's report.
    pub fn wait_load(&self, log: &Path, timeout: Duration) -> LoadReport {
        self.ok("wait for the load", self.inner.wait_load(log, timeout))
    }

    /// The VIP meshd gave `host`, once its workloads registered.
    pub fn vip(&self, from: &Pod, host: &str) -> String {
        self.ok("vip", self.inner.vip_from(&from.netns, host))
            .to_string()
    }

    /// `meshctl proxy-status -o json`.
    pub fn proxy_status(&self) -> serde_json::Value {
        self.ok("meshctl proxy-status", self.inner.proxy_status())
    }

    /// Waits until `count` proxies are connected and SYNCED on every type.
    pub fn wait_synced(&self, count: usize) {
        self.ok("wait for SYNCED", self.inner.wait_synced(count))
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn an_excerpt_keeps_the_error_a_backtrace_would_push_out_of_the_tail() {
        let mut log = vec!["starting", "Error: cannot bind admin on 127.0.0.1:4000"];
        log.extend(["", "Caused by:", "    Address already in use (os error 98)"]);
        let frames: Vec<String> = (0..30).map(|i| format!("  {i}: frame")).collect();
        log.extend(frames.iter().map(String::as_str));
        let text = log.join("\n");
        let e = excerpt(&text, 5);
        assert!(
            e.starts_with("Error: cannot bind admin on 127.0.0.1:4000\n\nCaused by:\n"),
            "{e}"
        );
        assert!(e.ends_with("  25: frame\n  26: frame\n  27: frame\n  28: frame\n  29: frame"));
        // An error within the tail, or none: just the tail.
        assert_eq!(excerpt("a\nError: x\nb", 5), "a\nError: x\nb");
        assert_eq!(excerpt("a\nb\nc", 2), "b\nc");
    }
}
