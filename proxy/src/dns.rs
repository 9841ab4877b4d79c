//! DNS clusters (`STRICT_DNS`, `LOGICAL_DNS`): the cluster's
//! `load_assignment` names hosts instead of IPs; the proxy resolves them with
//! tokio's resolver (the system's `getaddrinfo`) every `dns_refresh_rate`
//! and keeps the last good addresses when a resolution fails.
//!
//! The resolved endpoints live in a cell shared by every config that holds
//! the same cluster (same name, hosts, ports and settings), so a CDS push
//! that leaves a DNS cluster unchanged keeps its addresses and its refresh
//! loop; the loop ends once no config refers to the cell any more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3 as xe;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use serde::Serialize;
use tracing::{debug, warn};

use crate::config::check::opt_duration;
use crate::config::endpoint::load_assignment;
use crate::config::{ConfigError, Ctx, LoadAssignment};

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// Which address families a resolution keeps (`dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LookupFamily {
    /// `AUTO`, `V4_PREFERRED`, `ALL`: every address, in resolver order.
    Any,
    /// `V4_ONLY`.
    V4Only,
    /// `V6_ONLY`.
    V6Only,
}

/// What a DNS cluster resolves, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSpec {
    /// Cluster name (for logs).
    pub cluster: String,
    /// The host to resolve for each endpoint of `template`, in order.
    pub hosts: Vec<String>,
    /// The endpoints as configured (port, weight, health, locality,
    /// priority), with `0.0.0.0` in place of the host.
    pub template: LoadAssignment,
    /// `LOGICAL_DNS`: only the first address of a resolution is used.
    pub logical: bool,
    /// Interval between resolutions.
    pub refresh: Duration,
    /// `respect_dns_ttl` as asked; the system resolver does not report
    /// TTLs, so resolution always runs every `refresh`.
    pub respect_ttl: bool,
    /// Address families kept.
    pub family: LookupFamily,
}

/// The last good resolution of a DNS cluster.
#[derive(Debug, Default)]
struct DnsState {
    resolved: RwLock<Option<Arc<LoadAssignment>>>,
    failures: AtomicU64,
}

/// A DNS cluster: its spec and the shared cell of its resolved endpoints.
#[derive(Debug, Serialize)]
pub struct DnsCluster {
    /// What to resolve.
    #[serde(flatten)]
    pub spec: DnsSpec,
    #[serde(skip)]
    state: Arc<DnsState>,
}

/// Live cells by spec, so that an unchanged cluster in a new config shares
/// its predecessor's addresses and refresh loop.
static CELLS: LazyLock<Mutex<HashMap<String, Weak<DnsState>>>> = LazyLock::new(Default::default);

impl DnsCluster {
    /// A cluster for `spec`, sharing the cell of an identical live one;
    /// a new cell starts its refresh loop at once when a tokio runtime is
    /// running (without one, nothing is resolved).
    pub fn new(spec: DnsSpec) -> Self {
        let key = format!("{spec:?}");
        let mut cells = CELLS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = cells.get(&key).and_then(Weak::upgrade) {
            return DnsCluster { spec, state };
        }
        cells.retain(|_, w| w.strong_count() > 0);
        let state = Arc::new(DnsState::default());
        cells.insert(key, Arc::downgrade(&state));
        drop(cells);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(refresh_loop(Arc::downgrade(&state), spec.clone()));
        }
        DnsCluster { spec, state }
    }

    /// How many resolutions failed or found nothing so far.
    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// The endpoints of the last good resolution (`None` before the first).
    pub fn endpoints(&self) -> Option<Arc<LoadAssignment>> {
        self.state
            .resolved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Resolves `spec` until its cell is dropped, keeping the last good
/// endpoints when a resolution fails or finds nothing.
async fn refresh_loop(cell: Weak<DnsState>, spec: DnsSpec) {
    loop {
        let Some(state) = cell.upgrade() else { return };
        match resolve(&spec).await {
            Ok(la) if !la.endpoints.is_empty() => {
                debug!(cluster = %spec.cluster, endpoints = la.endpoints.len(), "DNS resolved");
                *state.resolved.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(la));
            }
            Ok(_) => {
                state.failures.fetch_add(1, Ordering::Relaxed);
                warn!(cluster = %spec.cluster, "DNS resolution found no address; keeping the last ones")
            }
            Err(error) => {
                state.failures.fetch_add(1, Ordering::Relaxed);
                warn!(cluster = %spec.cluster, %error, "DNS resolution failed; keeping the last addresses")
            }
        }
        drop(state);
        tokio::time::sleep(spec.refresh).await;
    }
}

/// One resolution of every host of `spec`.
pub async fn resolve(spec: &DnsSpec) -> std::io::Result<LoadAssignment> {
    let mut endpoints = Vec::new();
    for (host, template) in spec.hosts.iter().zip(&spec.template.endpoints) {
        let mut seen = Vec::new();
        for addr in tokio::net::lookup_host((host.as_str(), template.address.port())).await? {
            let keep = match spec.family {
                LookupFamily::Any => true,
                LookupFamily::V4Only => addr.is_ipv4(),
                LookupFamily::V6Only => addr.is_ipv6(),
            };
            if keep && !seen.contains(&addr) {
                seen.push(addr);
            }
        }
        if spec.logical {
            seen.truncate(1);
        }
        endpoints.extend(seen.into_iter().map(|address: SocketAddr| {
            let mut e = template.clone();
            e.address = address;
            e
        }));
    }
    Ok(LoadAssignment {
        cluster_name: spec.template.cluster_name.clone(),
        endpoints,
    })
}

/// The DNS settings of a `STRICT_DNS` (`logical` false) or `LOGICAL_DNS`
/// cluster, as they come in the `Cluster` proto.
#[derive(Debug, Default)]
pub struct DnsSettings {
    /// `load_assignment`: hosts in `socket_address.address`.
    pub load_assignment: Option<xe::ClusterLoadAssignment>,
    /// `dns_refresh_rate`.
    pub dns_refresh_rate: Option<wkt::Duration>,
    /// `respect_dns_ttl`.
    pub respect_dns_ttl: bool,
    /// `dns_lookup_family`.
    pub dns_lookup_family: i32,
}

/// Converts a DNS cluster's settings: each endpoint's `socket_address`
/// names a host (or an IP, which resolves to itself); everything else of
/// the load assignment is checked as for STATIC clusters.
pub(crate) fn dns_cluster(
    ctx: &Ctx,
    name: &str,
    logical: bool,
    settings: DnsSettings,
) -> Result<DnsCluster, ConfigError> {
    let DnsSettings {
        load_assignment: la,
        dns_refresh_rate,
        respect_dns_ttl,
        dns_lookup_family,
    } = settings;
    let mut la = la.ok_or_else(|| ctx.missing("load_assignment"))?;
    let mut hosts = Vec::new();
    for group in &mut la.endpoints {
        for lbe in &mut group.lb_endpoints {
            let Some(xe::lb_endpoint::HostIdentifier::Endpoint(e)) = &mut lbe.host_identifier
            else {
                continue;
            };
            if let Some(xc::Address {
                address: Some(xc::address::Address::SocketAddress(sa)),
            }) = &mut e.address
            {
                hosts.push(std::mem::replace(&mut sa.address, "0.0.0.0".into()));
            }
        }
    }
    let lctx = ctx.at("load_assignment");
    let template = load_assignment(&lctx, la)?;
    if hosts.len() != template.endpoints.len() {
        return Err(lctx.invalid("endpoints", "every endpoint needs a socket_address"));
    }
    if let Some(h) = hosts.iter().find(|h| h.is_empty()) {
        return Err(lctx.invalid("endpoints", format!("{h:?} is not a host name")));
    }
    if logical && hosts.len() != 1 {
        return Err(lctx.invalid(
            "endpoints",
            format!(
                "LOGICAL_DNS takes exactly one endpoint, got {}",
                hosts.len()
            ),
        ));
    }
    use xcl::cluster::DnsLookupFamily as F;
    let family = match F::try_from(dns_lookup_family) {
        Ok(F::Auto | F::V4Preferred | F::All) => LookupFamily::Any,
        Ok(F::V4Only) => LookupFamily::V4Only,
        Ok(F::V6Only) => LookupFamily::V6Only,
        Err(_) => {
            return Err(ctx.invalid(
                "dns_lookup_family",
                format!("unknown value {dns_lookup_family}"),
            ));
        }
    };
    let refresh = opt_duration(ctx, "dns_refresh_rate", dns_refresh_rate.as_ref())?
        .unwrap_or(DEFAULT_REFRESH);
    if refresh < Duration::from_millis(1) {
        return Err(ctx.invalid("dns_refresh_rate", "must be at least 1ms"));
    }
    Ok(DnsCluster::new(DnsSpec {
        cluster: name.to_string(),
        hosts,
        template,
        logical,
        refresh,
        respect_ttl: respect_dns_ttl,
        family,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cla(hosts: &[(&str, u32)]) -> xe::ClusterLoadAssignment {
        xe::ClusterLoadAssignment {
            cluster_name: "ext".into(),
            endpoints: vec![xe::LocalityLbEndpoints {
                lb_endpoints: hosts
                    .iter()
                    .map(|(h, p)| xe::LbEndpoint {
                        host_identifier: Some(xe::lb_endpoint::HostIdentifier::Endpoint(
                            xe::Endpoint {
                                address: Some(xc::Address {
                                    address: Some(xc::address::Address::SocketAddress(
                                        xc::SocketAddress {
                                            address: (*h).into(),
                                            port_specifier: Some(
                                                xc::socket_address::PortSpecifier::PortValue(*p),
                                            ),
                                            ..Default::default()
                                        },
                                    )),
                                }),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn settings(hosts: &[(&str, u32)]) -> DnsSettings {
        DnsSettings {
            load_assignment: Some(cla(hosts)),
            dns_lookup_family: xcl::cluster::DnsLookupFamily::V4Only as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_with_the_configured_port() {
        let ctx = Ctx::new("Cluster", "ext");
        let c = dns_cluster(&ctx, "ext", false, settings(&[("localhost", 8443)])).unwrap();
        assert_eq!(c.spec.hosts, ["localhost"]);
        let la = resolve(&c.spec).await.unwrap();
        assert_eq!(
            la.endpoints
                .iter()
                .map(|e| e.address.to_string())
                .collect::<Vec<_>>(),
            ["127.0.0.1:8443"]
        );
    }

    /// Polls `cond` every few milliseconds for up to 5 s.
    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_resolution_keeps_the_last_good_addresses() {
        let ctx = Ctx::new("Cluster", "ext");
        let mut s = settings(&[("127.0.0.1", 1)]);
        s.dns_refresh_rate = Some(wkt::Duration {
            seconds: 0,
            nanos: 10_000_000,
        });
        // An IP resolves to itself.
        let c = dns_cluster(&ctx, "ok", false, s).unwrap();
        wait_until("first resolution", || c.endpoints().is_some()).await;
        // A second config holding the same cluster shares the cell.
        let mut s = settings(&[("127.0.0.1", 1)]);
        s.dns_refresh_rate = Some(wkt::Duration {
            seconds: 0,
            nanos: 10_000_000,
        });
        let again = dns_cluster(&ctx, "ok", false, s).unwrap();
        assert!(Arc::ptr_eq(&c.state, &again.state));
        // A name with a NUL byte fails in the resolver, without any network.
        let bad = DnsSpec {
            hosts: vec!["bad\0host".into()],
            ..c.spec.clone()
        };
        assert!(resolve(&bad).await.is_err());
        let failing = DnsCluster {
            spec: bad.clone(),
            state: Arc::new(DnsState::default()),
        };
        *failing.state.resolved.write().unwrap() = c.endpoints();
        let task = tokio::spawn(refresh_loop(Arc::downgrade(&failing.state), bad));
        wait_until("two failed resolutions", || failing.failures() >= 2).await;
        assert_eq!(
            failing
                .endpoints()
                .map(|la| la.endpoints[0].address.to_string()),
            Some("127.0.0.1:1".to_string())
        );
        drop(failing);
        wait_until("the loop ends with its cell", || task.is_finished()).await;
    }

    #[test]
    fn logical_dns_takes_one_endpoint_and_bad_families_are_refused() {
        let ctx = Ctx::new("Cluster", "ext");
        let err = dns_cluster(&ctx, "ext", true, settings(&[("a", 1), ("b", 1)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster ext: invalid load_assignment.endpoints: LOGICAL_DNS takes exactly one endpoint, got 2"
        );
        let mut s = settings(&[("a", 1)]);
        s.dns_lookup_family = 42;
        assert!(dns_cluster(&ctx, "ext", false, s).is_err());
    }
}
