//! The book shop without root: every process on this host's loopback, each
//! sidecar in the proxy's explicit mode (`INTERCEPTION_MODE=NONE`, see
//! docs/xds.md "Explicit mode"), started by [`ExplicitMesh`]. Apps send
//! their upstream calls to their sidecar's outbound port (`--via`) with the
//! service in `Host`; callers' sidecars dial the server's sidecar on its
//! inbound port with mTLS, which forwards to the app on its own port.

use std::path::Path;
use std::time::Duration;

use super::{Crash, REVIEWS_SUBSETS, Sidecar, Spec, WORKLOADS, upstream_url};
use crate::bins::MESH_BINS;
use crate::explicit::{ExplicitMesh, ExplicitWorkload, Ports};
use crate::mesh::{MeshError, poll, synced_count};

/// The loopback book shop: meshd and the workloads as plain processes.
#[derive(Debug)]
pub(super) struct ExplicitShop {
    mesh: ExplicitMesh,
    workloads: Vec<(Spec, Ports)>,
}

impl ExplicitShop {
    pub(super) fn start(
        work_dir: Option<&Path>,
        step: &mut dyn FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<ExplicitShop, MeshError> {
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
        step("meshd and its CA on free ports of 127.0.0.1");
        // Children in their own process group: a terminal's Ctrl-C reaches
        // the demo, which then stops them itself.
        let mesh = ExplicitMesh::start_in(work_dir, &MESH_BINS, true)?;
        step(&format!(
            "meshd: xDS {}, CA {}, API {}",
            mesh.xds, mesh.ca, mesh.api
        ));
        let mut shop = ExplicitShop {
            mesh,
            workloads: Vec::new(),
        };
        step("DestinationRule reviews (subsets v1, v2)");
        shop.mesh.apply("reviews-subsets", REVIEWS_SUBSETS)?;
        for spec in WORKLOADS {
            stop()?;
            step(&format!(
                "{} with its sidecar in explicit mode on loopback",
                spec.name
            ));
            let ports = shop.mesh.workload(ExplicitWorkload {
                upstreams: spec.upstreams.iter().map(|u| upstream_url(u)).collect(),
                ..ExplicitWorkload::server(spec.name, spec.service, spec.version)
            })?;
            shop.workloads.push((spec, ports));
        }
        stop()?;
        step("waiting for the 5 sidecars to be SYNCED");
        let synced = poll(
            "5 proxies SYNCED",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let s = shop.mesh.syncz().map_err(|e| e.to_string())?;
                (synced_count(&s["proxies"]) == (WORKLOADS.len(), WORKLOADS.len()))
                    .then_some(())
                    .ok_or_else(|| s["proxies"].to_string())
            },
        );
        if let Err(e) = synced {
            return Err(match shop.mesh.crashed() {
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

    /// meshd's management API.
    pub(super) fn api(&self) -> &str {
        &self.mesh.api
    }

    pub(super) fn apply(&self, name: &str, yaml: &str) -> Result<(), MeshError> {
        self.mesh.apply(name, yaml)
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
        let argv = [
            self.mesh.bin("mesh-load")?,
            self.productpage_url(),
            "-n".into(),
            u32::MAX.to_string(),
            "--rps".into(),
            rps.to_string(),
            "--concurrency".into(),
            "4".into(),
            "--timeout-ms".into(),
            "3000".into(),
        ];
        self.mesh.spawn("load", &argv, &[]).map(drop)
    }

    pub(super) fn syncz(&self) -> Result<serde_json::Value, MeshError> {
        self.mesh.syncz()
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
        self.mesh.crashed()
    }

    pub(super) fn processes(&self) -> Vec<(String, u32)> {
        self.mesh.processes()
    }

    pub(super) fn work_dir(&self) -> &Path {
        self.mesh.work_dir()
    }

    pub(super) fn log_dir(&self) -> &Path {
        self.mesh.log_dir()
    }
}
