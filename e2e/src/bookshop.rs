//! The book-shop demo on a local mesh (what `meshctl demo` runs): four
//! services — productpage calling details and reviews (v1 and v2), reviews
//! calling ratings — each workload with a sidecar, meshd and its CA. As root
//! each workload is a pod (network namespace) with transparent interception
//! and meshd runs on the node ([`ShopMode::Netns`]); without root
//! everything runs on loopback with explicit-mode sidecars
//! ([`ShopMode::Explicit`]).
//!
//! Everything here is fallible and says what went wrong; presentation is
//! the caller's. Dropping a [`Bookshop`] removes every namespace and kills
//! every process it started.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::mesh::{MeshError, NetnsMesh, Workload, http_get, or_child_exited};
use crate::netns::Pod;

mod explicit;

use explicit::ExplicitShop;

/// A workload of the book shop.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Workload (pod) name, e.g. `reviews-v2`.
    pub name: &'static str,
    /// The service it serves on port 9080 (also its service account).
    pub service: &'static str,
    /// Its `version` label.
    pub version: &'static str,
    /// Services it calls on every request.
    pub upstreams: &'static [&'static str],
}

/// The five workloads, in start order (callees first).
pub const WORKLOADS: [Spec; 5] = [
    Spec {
        name: "ratings-v1",
        service: "ratings",
        version: "v1",
        upstreams: &[],
    },
    Spec {
        name: "reviews-v1",
        service: "reviews",
        version: "v1",
        upstreams: &["ratings"],
    },
    Spec {
        name: "reviews-v2",
        service: "reviews",
        version: "v2",
        upstreams: &["ratings"],
    },
    Spec {
        name: "details-v1",
        service: "details",
        version: "v1",
        upstreams: &[],
    },
    Spec {
        name: "productpage-v1",
        service: "productpage",
        version: "v1",
        upstreams: &["details", "reviews"],
    },
];

/// The four services.
pub const SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];

/// The port every service serves on.
pub const PORT: u16 = 9080;

/// The DestinationRule naming reviews' subsets v1 and v2.
pub const REVIEWS_SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// The canary VirtualService: `v1`% of reviews' requests to v1, `v2`% to v2.
pub fn reviews_canary(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}
"
    )
}

/// The upstream URL a workload calls for `service`.
pub fn upstream_url(service: &str) -> String {
    format!("http://{service}:{PORT}/{service}")
}

/// One sidecar, and where its Prometheus metrics are.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Workload name, e.g. `reviews-v2`.
    pub workload: String,
    /// The service its workload serves.
    pub service: String,
    /// Its `/stats/prometheus` URL.
    pub metrics_url: String,
    /// The namespace the URL is reachable from (`None`: this one).
    pub netns: Option<String>,
}

/// A child process that exited while the demo was running.
#[derive(Debug, Clone)]
pub struct Crash {
    /// Its label, e.g. `reviews-v2-proxy`.
    pub label: String,
    /// Its PID.
    pub pid: u32,
    /// How it ended, e.g. `signal: 9 (SIGKILL)`.
    pub status: String,
    /// The last lines of its log.
    pub log_tail: String,
}

/// The book shop in network namespaces (root).
#[derive(Debug)]
struct NetnsShop {
    mesh: NetnsMesh,
    pods: Vec<(Spec, Pod)>,
}

#[derive(Debug)]
enum Inner {
    Netns(NetnsShop),
    Explicit(ExplicitShop),
}

/// How the book shop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopMode {
    /// A network namespace per workload, transparent interception (root).
    Netns,
    /// Explicit-mode sidecars on loopback (no root).
    Explicit,
}

/// The running book shop. Dropping it removes every namespace and kills
/// every process it started.
#[derive(Debug)]
pub struct Bookshop {
    inner: Inner,
}

fn interrupted_err() -> MeshError {
    MeshError::Unexpected {
        what: "setting up the demo".into(),
        detail: "interrupted".into(),
    }
}

impl NetnsShop {
    fn start(
        work_dir: Option<&Path>,
        step: &mut dyn FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<NetnsShop, MeshError> {
        let stop = || -> Result<(), MeshError> {
            if interrupted() {
                Err(interrupted_err())
            } else {
                Ok(())
            }
        };
        step("meshd and its CA in the node namespace");
        let mut mesh = NetnsMesh::start("demo", work_dir)?;
        step("DestinationRule reviews (subsets v1, v2)");
        mesh.apply("reviews-subsets", REVIEWS_SUBSETS)?;
        let mut pods = Vec::new();
        for spec in WORKLOADS {
            stop()?;
            step(&format!(
                "pod {} with mesh-proxy init rules and its sidecar",
                spec.name
            ));
            let pod = mesh.node.add_pod(spec.name)?;
            mesh.sidecar(
                &pod,
                Workload {
                    name: spec.name,
                    service_account: spec.service,
                    service: Some(spec.service),
                    version: spec.version,
                    svid_ttl: None,
                },
            )?;
            pods.push((spec, pod));
        }
        // Apps call their upstreams by name, as in a cluster: each pod's
        // /etc/hosts (through `ip netns exec`) maps the names to the VIPs
        // meshd gave the services when their sidecars registered.
        step("waiting for the services to register (VIPs)");
        let mut names = Vec::new();
        for service in SERVICES {
            stop()?;
            let host = format!("{service}.default.svc.cluster.local");
            let vip = mesh.vip_from(mesh.node.netns(), &host);
            let vip = vip.map_err(|e| or_child_exited(&mut mesh.node, e))?;
            names.push((service.to_string(), vip));
        }
        for (spec, pod) in &pods {
            stop()?;
            mesh.node.set_hosts(pod, &names)?;
            let upstreams: Vec<String> = spec.upstreams.iter().map(|u| upstream_url(u)).collect();
            mesh.start_app(pod, spec.name, spec.service, spec.version, &upstreams)?;
        }
        stop()?;
        step("waiting for the 5 sidecars to be SYNCED");
        let synced = mesh.wait_synced(WORKLOADS.len());
        synced.map_err(|e| or_child_exited(&mut mesh.node, e))?;
        Ok(NetnsShop { mesh, pods })
    }

    fn productpage_url(&self) -> String {
        let ip = self
            .pods
            .iter()
            .find(|(s, _)| s.name == "productpage-v1")
            .map_or(Ipv4Addr::UNSPECIFIED, |(_, p)| p.ip);
        format!("http://{ip}:{PORT}/productpage")
    }

    fn sidecars(&self) -> Vec<Sidecar> {
        self.pods
            .iter()
            .map(|(spec, pod)| Sidecar {
                workload: spec.name.to_string(),
                service: spec.service.to_string(),
                metrics_url: format!("http://{}:15090/stats/prometheus", pod.ip),
                netns: Some(self.mesh.node.netns().to_string()),
            })
            .collect()
    }

    fn crashed(&mut self) -> Option<Crash> {
        let e = self.mesh.node.exited()?;
        Some(Crash {
            log_tail: self.mesh.node.log_tail_of(&e.label, 15),
            label: e.label,
            pid: e.pid,
            status: e.status.to_string(),
        })
    }
}

impl Bookshop {
    /// Starts meshd and the five workloads with their sidecars, and waits
    /// until every proxy is SYNCED. `step` is told what is happening, for
    /// progress output; `interrupted` is checked between steps (Ctrl-C
    /// during setup still cleans up). A failed step removes what was
    /// created so far.
    pub fn start(
        mode: ShopMode,
        work_dir: Option<&Path>,
        step: &mut dyn FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Bookshop, MeshError> {
        let inner = match mode {
            ShopMode::Netns => Inner::Netns(NetnsShop::start(work_dir, step, interrupted)?),
            ShopMode::Explicit => {
                Inner::Explicit(ExplicitShop::start(work_dir, step, interrupted)?)
            }
        };
        Ok(Bookshop { inner })
    }

    /// How it runs.
    pub fn mode(&self) -> ShopMode {
        match &self.inner {
            Inner::Netns(_) => ShopMode::Netns,
            Inner::Explicit(_) => ShopMode::Explicit,
        }
    }

    /// meshd's management API, reachable from [`Bookshop::node_netns`].
    pub fn api(&self) -> &str {
        match &self.inner {
            Inner::Netns(n) => &n.mesh.api,
            Inner::Explicit(e) => e.api(),
        }
    }

    /// The node namespace (meshd runs there; the pods are reachable from
    /// it); `None` in explicit mode (everything is on this host's loopback).
    pub fn node_netns(&self) -> Option<&str> {
        match &self.inner {
            Inner::Netns(n) => Some(n.mesh.node.netns()),
            Inner::Explicit(_) => None,
        }
    }

    /// The namespace of a workload's pod (netns mode).
    pub fn pod_netns(&self, workload: &str) -> Option<&str> {
        match &self.inner {
            Inner::Netns(n) => n
                .pods
                .iter()
                .find(|(s, _)| s.name == workload)
                .map(|(_, p)| p.netns.as_str()),
            Inner::Explicit(_) => None,
        }
    }

    /// The HTTP proxy URL of a workload's sidecar (explicit mode): what
    /// an app sets as `HTTP_PROXY` to call services through it.
    pub fn outbound_proxy(&self, workload: &str) -> Option<String> {
        match &self.inner {
            Inner::Netns(_) => None,
            Inner::Explicit(e) => e.outbound_proxy(workload),
        }
    }

    /// The work directory (meshd's store and CA under `meshd/`, the
    /// applied YAML).
    pub fn work_dir(&self) -> &Path {
        match &self.inner {
            Inner::Netns(n) => n.mesh.work_dir(),
            Inner::Explicit(e) => e.work_dir(),
        }
    }

    /// The productpage URL, as reached from [`Bookshop::node_netns`].
    pub fn productpage_url(&self) -> String {
        match &self.inner {
            Inner::Netns(n) => n.productpage_url(),
            Inner::Explicit(e) => e.productpage_url(),
        }
    }

    /// Applies the canary VirtualService (v1 and v2 weights).
    pub fn apply_canary(&self, v1: u32, v2: u32) -> Result<(), MeshError> {
        let yaml = reviews_canary(v1, v2);
        match &self.inner {
            Inner::Netns(n) => n.mesh.apply("reviews-canary", &yaml),
            Inner::Explicit(e) => e.apply("reviews-canary", &yaml),
        }
    }

    /// Starts steady traffic (`mesh-load`) to productpage at `rps`.
    pub fn start_traffic(&mut self, rps: u32) -> Result<(), MeshError> {
        let url = self.productpage_url();
        match &mut self.inner {
            Inner::Netns(n) => {
                let netns = n.mesh.node.netns().to_string();
                n.mesh
                    .start_load_in(&netns, "load", &url, u32::MAX, rps)
                    .map(drop)
            }
            Inner::Explicit(e) => e.start_traffic(rps),
        }
    }

    /// One request to productpage: its JSON reply (the response chain with
    /// each service's version and caller).
    pub fn sample(&self) -> Result<serde_json::Value, MeshError> {
        let url = self.productpage_url();
        let (status, body) = http_get(self.node_netns(), &url)?;
        serde_json::from_str(&body).map_err(|e| MeshError::Unexpected {
            what: format!("GET {url} (status {status})"),
            detail: format!("{e}: {body}"),
        })
    }

    /// meshd's `/debug/syncz` (what `meshctl proxy-status` shows).
    pub fn syncz(&self) -> Result<serde_json::Value, MeshError> {
        match &self.inner {
            Inner::Netns(n) => n.mesh.syncz(),
            Inner::Explicit(e) => e.syncz(),
        }
    }

    /// Every sidecar and where its metrics are.
    pub fn sidecars(&self) -> Vec<Sidecar> {
        match &self.inner {
            Inner::Netns(n) => n.sidecars(),
            Inner::Explicit(e) => e.sidecars(),
        }
    }

    /// Fetches one sidecar's Prometheus text.
    pub fn scrape(&self, sidecar: &Sidecar) -> Result<String, MeshError> {
        let (status, body) = http_get(sidecar.netns.as_deref(), &sidecar.metrics_url)?;
        if status != 200 {
            return Err(MeshError::Unexpected {
                what: format!("GET {}", sidecar.metrics_url),
                detail: format!("status {status}"),
            });
        }
        Ok(body)
    }

    /// The first child process that has exited, with the tail of its log.
    pub fn crashed(&mut self) -> Option<Crash> {
        match &mut self.inner {
            Inner::Netns(n) => n.crashed(),
            Inner::Explicit(e) => e.crashed(),
        }
    }

    /// Every process the demo started and still runs: label and PID.
    pub fn processes(&self) -> Vec<(String, u32)> {
        match &self.inner {
            Inner::Netns(n) => n.mesh.node.processes(),
            Inner::Explicit(e) => e.processes(),
        }
    }

    /// Every network namespace the demo created (none in explicit mode).
    pub fn namespaces(&self) -> Vec<String> {
        match &self.inner {
            Inner::Netns(n) => n.mesh.node.namespaces(),
            Inner::Explicit(_) => Vec::new(),
        }
    }

    /// Where the processes' logs are (removed with a temp work dir).
    pub fn log_dir(&self) -> &Path {
        match &self.inner {
            Inner::Netns(n) => n.mesh.node.log_dir(),
            Inner::Explicit(e) => e.log_dir(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_names_both_subsets_with_their_weights() {
        let vs = reviews_canary(90, 10);
        assert!(vs.contains("subset: v1}, weight: 90"), "{vs}");
        assert!(vs.contains("subset: v2}, weight: 10"), "{vs}");
    }

    #[test]
    fn every_upstream_is_a_service_started_before_its_caller() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            for up in w.upstreams {
                assert!(
                    WORKLOADS[..i].iter().any(|s| s.service == *up),
                    "{} calls {up}, which starts later",
                    w.name
                );
            }
        }
    }
}
