//! The service registry off Kubernetes: services from `ServiceEntry`
//! resources, endpoints from inline endpoints, selected `WorkloadEntry`
//! resources and auto-registered workloads (a proxy that connects with
//! `MESH_SERVICE_NAME` in its node metadata).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_model::Resource;
use mesh_model::common::labels_match;
use mesh_model::networking::WorkloadEntrySpec;
use serde::Serialize;
use tokio::sync::watch;

use crate::node::{Interception, ProxyNode};

/// The cluster domain of service hosts.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Label marking an endpoint that runs a mesh sidecar (mTLS capable).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Application protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 (or any HTTP).
    Http,
    /// HTTP/2 or gRPC.
    Http2,
    /// Opaque TCP (also TLS passthrough).
    Tcp,
}

impl Protocol {
    /// Istio's rule: the `protocol` field, else the port name's prefix
    /// (`http-web`), else TCP.
    pub fn detect(protocol: Option<&str>, name: Option<&str>) -> Self {
        let p = protocol
            .or_else(|| name.map(|n| n.split('-').next().unwrap_or(n)))
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        match p.as_str() {
            "http" => Protocol::Http,
            "http2" | "grpc" | "grpc-web" => Protocol::Http2,
            _ => Protocol::Tcp,
        }
    }

    /// Whether the port speaks HTTP (gets an HCM and routes).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePort {
    /// The service port.
    pub number: u32,
    /// Its name (`http`, `http-web`...).
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The endpoint port when endpoints name none for this port.
    pub target_port: Option<u32>,
}

/// Health of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    /// Takes traffic.
    Healthy,
    /// Its proxy disconnected; kept for the grace period.
    Unhealthy,
    /// Terminating but still serving (a Kubernetes endpoint shutting down):
    /// no new requests, existing ones finish.
    Draining,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// IP address (or hostname for DNS services).
    pub address: String,
    /// Port overrides by service port name.
    pub ports: BTreeMap<String, u32>,
    /// Labels (subsets select on them).
    pub labels: BTreeMap<String, String>,
    /// `region/zone/sub_zone`.
    pub locality: Option<String>,
    /// Load-balancing weight (≥1).
    pub weight: u32,
    /// Health.
    pub health: Health,
    /// Service account, for the expected SPIFFE ID.
    pub service_account: Option<String>,
    /// Namespace of the workload.
    pub namespace: String,
    /// Where it came from (`WorkloadEntry ns/name`, `proxy <id>`...).
    pub source: String,
}

impl Endpoint {
    /// The port this endpoint takes traffic on for `port`.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// Whether a sidecar fronts the endpoint (so mTLS can be used).
    pub fn is_mesh(&self) -> bool {
        self.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio")
    }
}

/// A service in the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub host: String,
    /// Namespace that defines it.
    pub namespace: String,
    /// Its virtual IP.
    pub vip: Ipv4Addr,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `MESH_EXTERNAL` services get no mTLS by default.
    pub external: bool,
    /// `ServiceEntry ns/name`, or `auto-registration`.
    pub source: String,
}

impl Service {
    /// The short name (first label) of the host.
    pub fn short_name(&self) -> &str {
        self.host.split('.').next().unwrap_or(&self.host)
    }
}

/// An auto-registered workload (a connected or recently connected proxy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// The proxy's identity.
    pub node: ProxyNode,
    /// Open xDS streams of this node.
    pub connections: u32,
    /// When the last stream dropped (None while connected).
    #[serde(skip)]
    pub disconnected_at: Option<Instant>,
}

/// Workloads registered by their proxies' connections.
#[derive(Debug)]
pub struct Workloads {
    inner: Mutex<HashMap<String, Workload>>,
    changed: watch::Sender<u64>,
    grace: Duration,
    // Services of a platform registry (Kubernetes), set whole by its owner.
    platform: Mutex<Vec<PendingService>>,
}

impl Workloads {
    /// An empty registry; disconnected workloads are dropped after `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            grace,
            platform: Mutex::new(Vec::new()),
        }
    }

    /// Fires whenever the set of workloads or their health changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A proxy opened a stream. Only proxies naming a service register.
    pub fn connected(&self, node: &ProxyNode) {
        if node.service_name.is_none() || node.ips.is_empty() {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let w = m.entry(node.id.clone()).or_insert_with(|| Workload {
            node: node.clone(),
            connections: 0,
            disconnected_at: None,
        });
        w.node = node.clone();
        w.connections += 1;
        w.disconnected_at = None;
        drop(m);
        self.bump();
    }

    /// A proxy's stream ended; the workload turns unhealthy when it has no
    /// stream left.
    pub fn disconnected(&self, id: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        if let Some(w) = m.get_mut(id) {
            w.connections = w.connections.saturating_sub(1);
            if w.connections == 0 {
                w.disconnected_at = Some(Instant::now());
                changed = true;
            }
        }
        drop(m);
        if changed {
            self.bump();
        }
    }

    /// Drops workloads disconnected for longer than the grace period.
    pub fn reap(&self, now: Instant) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = m.len();
        m.retain(|_, w| {
            w.disconnected_at
                .is_none_or(|t| now.duration_since(t) < self.grace)
        });
        let changed = m.len() != before;
        drop(m);
        if changed {
            self.bump();
        }
    }

    /// Replaces the services of a platform registry (Kubernetes Services
    /// with their endpoints; see `crate::kube::registry`). They win over a
    /// `ServiceEntry` of the same host.
    pub fn set_platform_services(&self, services: Vec<PendingService>) {
        *self.platform.lock().unwrap_or_else(|p| p.into_inner()) = services;
        self.bump();
    }

    /// The services last set by [`Workloads::set_platform_services`].
    pub fn platform_services(&self) -> Vec<PendingService> {
        self.platform
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current workloads.
    pub fn list(&self) -> Vec<Workload> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        v
    }
}

/// A service before it has a VIP.
#[derive(Debug, Clone)]
pub struct PendingService {
    /// The service without its VIP.
    pub service: Service,
    /// An address from the ServiceEntry, if it named one.
    pub address: Option<Ipv4Addr>,
}

/// Collects services and endpoints from config and workloads (VIPs are
/// assigned afterwards by the caller).
pub fn collect(config: &[Resource], workloads: &[Workload]) -> Vec<PendingService> {
    let mut services: BTreeMap<String, PendingService> = BTreeMap::new();
    let entries: Vec<(&str, &str, &WorkloadEntrySpec)> = config
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEntry(o) => Some((r.namespace(), r.name(), &o.spec)),
            _ => None,
        })
        .collect();
    for r in config {
        let Resource::ServiceEntry(se) = r else {
            continue;
        };
        let ns = r.namespace();
        let ports: Vec<ServicePort> = se
            .spec
            .ports
            .iter()
            .map(|p| ServicePort {
                number: p.number,
                name: p
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("port-{}", p.number)),
                protocol: Protocol::detect(p.protocol.as_deref(), p.name.as_deref()),
                target_port: p.target_port,
            })
            .collect();
        let mut endpoints: Vec<Endpoint> = se
            .spec
            .endpoints
            .iter()
            .map(|we| endpoint_of(we, ns, format!("{r} inline endpoint")))
            .collect();
        if let Some(sel) = &se.spec.workload_selector {
            for (wns, wname, we) in &entries {
                if *wns == ns && labels_match(&sel.labels, &we.labels) {
                    endpoints.push(endpoint_of(we, wns, format!("WorkloadEntry {wns}/{wname}")));
                }
            }
        }
        let external = matches!(
            se.spec.location,
            Some(mesh_model::networking::Location::MeshExternal)
        );
        let address = se.spec.addresses.iter().find_map(|a| a.parse().ok());
        for host in &se.spec.hosts {
            let host = mesh_model::host::fqdn(host, ns, CLUSTER_DOMAIN);
            if host.starts_with('*') {
                continue;
            }
            services
                .entry(host.clone())
                .or_insert_with(|| PendingService {
                    service: Service {
                        host,
                        namespace: ns.to_string(),
                        vip: Ipv4Addr::UNSPECIFIED,
                        ports: ports.clone(),
                        endpoints: endpoints.clone(),
                        external,
                        source: r.to_string(),
                    },
                    address,
                });
        }
    }
    for w in workloads {
        let n = &w.node;
        let Some(name) = &n.service_name else {
            continue;
        };
        let host = mesh_model::host::fqdn(name, &n.namespace, CLUSTER_DOMAIN);
        let explicit = n.explicit_inbound();
        let mut ports: BTreeMap<String, u32> = n
            .service_ports
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        // Explicit mode: callers dial the sidecar's inbound port, not the app.
        if let Some(ei) = &explicit {
            ports.insert(ei.protocol.clone(), ei.inbound_port);
        }
        let entry = services
            .entry(host.clone())
            .or_insert_with(|| PendingService {
                service: Service {
                    host,
                    namespace: n.namespace.clone(),
                    vip: Ipv4Addr::UNSPECIFIED,
                    ports: n
                        .service_ports
                        .iter()
                        .map(|(name, port)| ServicePort {
                            number: *port,
                            name: name.clone(),
                            protocol: Protocol::detect(None, Some(name)),
                            target_port: None,
                        })
                        .collect(),
                    endpoints: Vec::new(),
                    external: false,
                    source: "auto-registration".into(),
                },
                address: None,
            });
        let mut labels = n.labels.clone();
        // An explicit-mode sidecar without an inbound port cannot terminate
        // mTLS: callers must reach its app in plain text.
        if n.interception != Interception::None || explicit.is_some() {
            labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        }
        entry.service.endpoints.push(Endpoint {
            address: n.ips[0].clone(),
            ports,
            labels,
            locality: n.locality.clone(),
            weight: 1,
            health: if w.disconnected_at.is_some() {
                Health::Unhealthy
            } else {
                Health::Healthy
            },
            service_account: Some(n.service_account.clone()),
            namespace: n.namespace.clone(),
            source: format!("proxy {}", n.id),
        });
    }
    services.into_values().collect()
}

fn endpoint_of(we: &WorkloadEntrySpec, ns: &str, source: String) -> Endpoint {
    Endpoint {
        address: we.address.clone().unwrap_or_default(),
        ports: we.ports.clone(),
        labels: we.labels.clone(),
        locality: we.locality.clone(),
        weight: we.weight.unwrap_or(1).max(1),
        health: Health::Healthy,
        service_account: we.service_account.clone(),
        namespace: ns.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Resource> {
        mesh_model::parse_documents(text, "t").unwrap()
    }

    const SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1, namespace: shop}
spec: {address: 127.0.0.1, labels: {app: backend, version: v1}, ports: {http: 9001}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: shop}
spec: {address: 127.0.0.2, labels: {app: other}}
";

    #[test]
    fn service_entry_selects_workload_entries_by_label() {
        let svcs = collect(&parse(SE), &[]);
        assert_eq!(svcs.len(), 1);
        let s = &svcs[0].service;
        assert_eq!(s.host, "backend.shop.svc.cluster.local");
        assert_eq!(s.ports[0].protocol, Protocol::Http);
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.endpoints[0].port_for(&s.ports[0]), 9001);
    }

    #[tokio::test(start_paused = true)]
    async fn connected_proxy_registers_and_turns_unhealthy_then_leaves() {
        let w = Workloads::new(Duration::from_secs(30));
        let node = ProxyNode::from_node(&Default::default());
        let node = ProxyNode {
            service_name: Some("ratings".into()),
            ips: vec!["10.1.1.1".into()],
            service_ports: vec![("http".into(), 9080)],
            ..node
        };
        w.connected(&node);
        let svcs = collect(&[], &w.list());
        assert_eq!(svcs[0].service.host, "ratings.default.svc.cluster.local");
        assert_eq!(svcs[0].service.endpoints[0].health, Health::Healthy);
        assert!(svcs[0].service.endpoints[0].is_mesh());
        w.disconnected(&node.id);
        let svcs = collect(&[], &w.list());
        assert_eq!(svcs[0].service.endpoints[0].health, Health::Unhealthy);
        w.reap(Instant::now() + Duration::from_secs(10));
        assert_eq!(w.list().len(), 1, "still within grace");
        w.reap(Instant::now() + Duration::from_secs(31));
        assert!(w.list().is_empty());
    }

    #[test]
    fn explicit_workload_registers_at_its_sidecar_inbound_port_with_mtls() {
        let w = Workloads::new(Duration::from_secs(30));
        let base = ProxyNode::from_node(&Default::default());
        let server = ProxyNode {
            id: "reviews".into(),
            service_name: Some("reviews".into()),
            ips: vec!["127.0.0.1".into()],
            service_ports: vec![("http".into(), 9080)],
            interception: Interception::None,
            inbound_port: Some(18006),
            app_port: Some(18001),
            ..base.clone()
        };
        let plain = ProxyNode {
            id: "ratings".into(),
            service_name: Some("ratings".into()),
            inbound_port: None,
            ..server.clone()
        };
        w.connected(&server);
        w.connected(&plain);
        let svcs = collect(&[], &w.list());
        let find = |h: &str| {
            svcs.iter()
                .find(|s| s.service.host.starts_with(h))
                .map(|s| s.service.clone())
                .unwrap()
        };
        let reviews = find("reviews.");
        assert_eq!(reviews.endpoints[0].port_for(&reviews.ports[0]), 18006);
        assert!(reviews.endpoints[0].is_mesh());
        let ratings = find("ratings.");
        assert_eq!(ratings.endpoints[0].port_for(&ratings.ports[0]), 9080);
        assert!(
            !ratings.endpoints[0].is_mesh(),
            "no sidecar inbound: plain text"
        );
    }
}
