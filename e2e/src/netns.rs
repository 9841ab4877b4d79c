//! Pods as network namespaces on a bridge inside a "node" namespace.
//!
//! The node namespace has no link to the host, so nothing a test sends can
//! leave the machine: pods reach each other and the node (where meshd runs)
//! through the bridge, and their default route points at the node, which
//! goes nowhere. Addresses come from the benchmarking range 198.18.0.0/15.
//! Everything created is removed on drop, including after a failed test, and
//! namespaces left by a crashed earlier run are removed at the next start.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The node's address on the pod bridge.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PREFIX: &str = "meshe2e";

/// Why the harness could not set something up.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A setup command could not be started at all.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setup command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Creating the log directory failed.
    #[error("creating the log directory: {0}")]
    Logs(#[source] std::io::Error),
    /// More pods than the /24 holds.
    #[error("no address left for pod {0}")]
    NoAddress(String),
    /// Writing a pod's `/etc/netns/<ns>/hosts` failed.
    #[error("writing {path}: {source}")]
    Hosts {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Entering a network namespace from a thread failed.
    #[error("entering network namespace {netns}: {reason}")]
    Enter {
        /// The namespace.
        netns: String,
        /// What failed.
        reason: String,
    },
}

/// A process started by [`Node::spawn`] that has exited.
#[derive(Debug, Clone)]
pub struct Exited {
    /// Its label (the log file is `<label>.log`).
    pub label: String,
    /// Its PID.
    pub pid: u32,
    /// How it ended.
    pub status: std::process::ExitStatus,
}

/// Whether an end-to-end test that needs root can run. When it cannot, says
/// why and returns false, or panics when `MESH_E2E_REQUIRED=1` (CI), so a
/// machine that cannot run the suite fails instead of passing quietly.
pub fn e2e_available(test: &str) -> bool {
    match netns_unavailable() {
        None => true,
        Some(why) if std::env::var("MESH_E2E_REQUIRED").as_deref() == Ok("1") => {
            panic!("{test}: MESH_E2E_REQUIRED=1 but {why}")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Why pods as network namespaces cannot be built here (not root, or a
/// tool missing), or `None` when they can.
pub fn netns_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root (network namespaces and iptables need it)".to_string());
    }
    ["ip", "iptables", "setpriv"]
        .iter()
        .find(|tool| !on_path(tool))
        .map(|tool| {
            format!("`{tool}` is not installed (apt-get install iproute2 iptables util-linux; scripts/test.sh installs it)")
        })
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs".
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file()
}

/// A pod: one network namespace with one address on the node's bridge.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Short name given by the test.
    pub name: String,
    /// The network namespace's name (for `ip netns exec`).
    pub netns: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

/// A node namespace with its bridge, its pods and the processes started in
/// them. Dropping it kills the processes (by PID) and deletes the namespaces.
#[derive(Debug)]
pub struct Node {
    id: String,
    netns: String,
    pods: Vec<Pod>,
    procs: Vec<(String, Child)>,
    logs: PathBuf,
}

fn run(cmd: &mut Command) -> Result<Output, HarnessError> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output, HarnessError> {
    run(Command::new("ip").args(args))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Where `ip netns exec` finds a namespace's own `/etc` files.
const ETC_NETNS: &str = "/etc/netns";

/// Deletes namespaces (and their `/etc/netns` files) left behind by harness
/// runs whose process is gone.
fn remove_stale_namespaces() {
    for dir in ["/run/netns", ETC_NETNS] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| !pid_alive(pid)) {
                if dir == ETC_NETNS {
                    let _ = fs::remove_dir_all(e.path());
                } else {
                    let _ = ip(&["netns", "del", &name]);
                }
            }
        }
    }
}

/// Runs `f` on a new thread that has entered network namespace `netns`
/// (sockets it opens live there), on a single-threaded tokio runtime, and
/// returns its output. The calling thread stays where it was.
pub fn in_netns<T, F, Fut>(netns: &str, f: F) -> Result<T, HarnessError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let enter = |reason: String| HarnessError::Enter {
        netns: netns.to_string(),
        reason,
    };
    let file = fs::File::open(Path::new("/run/netns").join(netns))
        .map_err(|e| enter(format!("opening /run/netns/{netns}: {e}")))?;
    let thread = std::thread::spawn(move || -> Result<T, String> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        Ok(rt.block_on(f()))
    });
    thread
        .join()
        .map_err(|_| enter("the thread panicked".into()))?
        .map_err(enter)
}

impl Node {
    /// Creates the node namespace and its bridge.
    pub fn create(test: &str) -> Result<Node, HarnessError> {
        remove_stale_namespaces();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{PREFIX}-{}-{seq}", std::process::id());
        let netns = format!("{id}-node");
        let logs = std::env::temp_dir().join(format!("{id}-{test}"));
        fs::create_dir_all(&logs).map_err(HarnessError::Logs)?;
        ip(&["netns", "add", &netns])?;
        let node = Node {
            id,
            netns,
            pods: Vec::new(),
            procs: Vec::new(),
            logs,
        };
        node.exec(&node.netns, &["ip", "link", "set", "lo", "up"])?;
        node.exec(&node.netns, &["ip", "link", "add", "br0", "type", "bridge"])?;
        node.exec(
            &node.netns,
            &["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"],
        )?;
        node.exec(&node.netns, &["ip", "link", "set", "br0", "up"])?;
        Ok(node)
    }

    /// The node namespace's name (meshd runs there).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Where process logs go.
    pub fn log_dir(&self) -> &Path {
        &self.logs
    }

    /// Creates a pod namespace wired to the bridge, with lo up and a default
    /// route via the node (which has no way out).
    pub fn add_pod(&mut self, name: &str) -> Result<Pod, HarnessError> {
        let n = self.pods.len() + 10;
        let host = u8::try_from(n).map_err(|_| HarnessError::NoAddress(name.to_string()))?;
        let ip_addr = Ipv4Addr::new(198, 18, 0, host);
        let netns = format!("{}-{name}", self.id);
        ip(&["netns", "add", &netns])?;
        let pod = Pod {
            name: name.to_string(),
            netns: netns.clone(),
            ip: ip_addr,
        };
        // Push the pod now so drop removes its namespace even if wiring fails.
        self.pods.push(pod.clone());
        let peer = format!("vp{n}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &netns,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.netns,
        ])?;
        self.exec(&self.netns, &["ip", "link", "set", &peer, "master", "br0"])?;
        self.exec(&self.netns, &["ip", "link", "set", &peer, "up"])?;
        self.exec(&netns, &["ip", "link", "set", "lo", "up"])?;
        self.exec(
            &netns,
            &["ip", "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"],
        )?;
        self.exec(&netns, &["ip", "link", "set", "eth0", "up"])?;
        self.exec(
            &netns,
            &["ip", "route", "add", "default", "via", &NODE_IP.to_string()],
        )?;
        Ok(pod)
    }

    /// Runs a command to completion inside a namespace; fails on non-zero exit.
    pub fn exec(&self, netns: &str, argv: &[&str]) -> Result<Output, HarnessError> {
        run(Command::new("ip").args(["netns", "exec", netns]).args(argv))
    }

    /// Starts a long-running process inside a namespace, optionally as
    /// another uid/gid (the sidecar runs as 1337), with stdout and stderr in
    /// `<log_dir>/<label>.log`. It is killed when the node is dropped.
    pub fn spawn(
        &mut self,
        label: &str,
        netns: &str,
        uid: Option<u32>,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<u32, HarnessError> {
        let log_path = self.logs.join(format!("{label}.log"));
        let log = fs::File::create(&log_path).map_err(HarnessError::Logs)?;
        let log2 = log.try_clone().map_err(HarnessError::Logs)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]);
        if let Some(uid) = uid {
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "--",
            ]);
        }
        cmd.args(argv)
            // An error a process exits with reads better without a
            // backtrace (panics keep theirs, under RUST_BACKTRACE).
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // A process group of its own: Ctrl-C in the terminal reaches the
        // harness (which then cleans up), not each child behind its back.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            command: format!("{cmd:?}"),
            source,
        })?;
        let pid = child.id();
        self.procs.push((label.to_string(), child));
        Ok(pid)
    }

    /// Kills one process started by [`Node::spawn`] (by its PID) and waits
    /// for it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(pos) = self.procs.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut child) = self.procs.remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of every process log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (label, _) in &self.procs {
            out.push_str(&format!(
                "--- {label} ---\n{}\n",
                self.log_tail_of(label, lines)
            ));
        }
        out
    }

    /// The last `lines` lines of one process's log.
    pub fn log_tail_of(&self, label: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default();
        crate::mesh::excerpt(&text, lines)
    }

    /// The processes started by [`Node::spawn`] and still tracked: label
    /// and PID.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(label, c)| (label.clone(), c.id()))
            .collect()
    }

    /// Every network namespace this node created (the node's first).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.netns.clone())
            .chain(self.pods.iter().map(|p| p.netns.clone()))
            .collect()
    }

    /// The first tracked process that has exited, if any; it is no longer
    /// tracked afterwards (its log stays).
    pub fn exited(&mut self) -> Option<Exited> {
        let pos = self
            .procs
            .iter_mut()
            .position(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))?;
        let (label, mut child) = self.procs.remove(pos);
        let pid = child.id();
        let status = child.try_wait().ok().flatten()?;
        Some(Exited { label, pid, status })
    }

    /// Writes `/etc/netns/<pod ns>/hosts` so that processes started in the
    /// pod with `ip netns exec` resolve `names` (as a cluster's DNS would);
    /// removed with the node.
    pub fn set_hosts(&self, pod: &Pod, names: &[(String, Ipv4Addr)]) -> Result<(), HarnessError> {
        let dir = Path::new(ETC_NETNS).join(&pod.netns);
        let path = dir.join("hosts");
        let err = |source| HarnessError::Hosts {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        fs::write(&path, text).map_err(err)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e logs ({}):\n{}", self.logs.display(), self.log_tail(40));
        }
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pod in &self.pods {
            let _ = ip(&["netns", "del", &pod.netns]);
            let _ = fs::remove_dir_all(Path::new(ETC_NETNS).join(&pod.netns));
        }
        let _ = ip(&["netns", "del", &self.netns]);
        // Logs are kept only when the test failed, for diagnosis.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.logs);
        }
    }
}
