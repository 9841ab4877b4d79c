//! Translation of a snapshot into the xDS resources of one proxy, exactly as
//! docs/xds.md describes: listeners, routes, clusters and endpoints.

pub mod clusters;
pub mod dns;
pub mod endpoints;
pub mod l4;
pub mod listeners;
pub mod peer_auth;
pub mod routes;

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_model::Resource;
use mesh_model::common::labels_match;
use mesh_model::networking::{DestinationRuleSpec, SidecarSpec, VirtualServiceSpec};
use mesh_model::{Object, host};
use mesh_proto::envoy::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use mesh_proto::envoy::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use crate::node::ProxyNode;
use crate::registry::{CLUSTER_DOMAIN, Service};
use crate::snapshot::Snapshot;

/// Type URL of listeners.
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of route configurations.
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of clusters.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of endpoints.
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The type URLs meshd serves, in the order a push sends them (clusters
/// before endpoints, listeners before routes, as Envoy's ADS guide asks).
pub const PUSH_ORDER: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// istioctl's short names of the type URLs.
pub fn short_type(type_url: &str) -> &'static str {
    match type_url {
        LISTENER_TYPE => "LDS",
        ROUTE_TYPE => "RDS",
        CLUSTER_TYPE => "CDS",
        ENDPOINT_TYPE => "EDS",
        _ => "UNKNOWN",
    }
}

/// One generated resource: its encoded form and a content version.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The resource, packed.
    pub any: Any,
    /// A hash of the encoded bytes (stable across restarts), in hex.
    pub version: String,
    /// The same hash as a number.
    pub version_id: u64,
    /// [`name_id`] of the resource's name (set by [`generate`]).
    pub name_id: u64,
}

/// A proxy's resources by type URL, then by name.
pub type ProxyConfig = BTreeMap<&'static str, BTreeMap<String, Generated>>;

/// Packs a resource and computes its version.
pub fn pack<T: Message + Name>(msg: &T) -> Generated {
    let value = msg.encode_to_vec();
    let version_id = fnv64(&value);
    Generated {
        any: Any {
            type_url: T::type_url(),
            value,
        },
        version: format!("{version_id:016x}"),
        version_id,
        name_id: 0,
    }
}

/// A version for a whole set of resources (SotW `version_info`).
pub fn set_version(resources: &BTreeMap<String, Generated>) -> String {
    set_version_of(resources.iter())
}

/// [`set_version`] over any (name, resource) sequence, without collecting it.
/// Mixes the precomputed name and content ids: cheap enough to run per
/// stream and push.
pub fn set_version_of<'a>(resources: impl Iterator<Item = (&'a String, &'a Generated)>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (_, g) in resources {
        h = (h ^ g.name_id).wrapping_mul(0x0000_0100_0000_01b3);
        h = (h ^ g.version_id).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A 64-bit id of a resource name: streams remember names by id, not by a
/// copy of the string (a thousand proxies × thousands of names adds up).
pub fn name_id(name: &str) -> u64 {
    fnv64(name.as_bytes())
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `ConfigSource { ads: {} }`, v3.
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A protobuf duration.
pub fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Parses an Istio duration string (`1.5s`, `100ms`); `None` if absent or bad
/// (validation has rejected bad ones before they reach the store).
pub fn istio_duration(s: Option<&String>) -> Option<PbDuration> {
    s.and_then(|s| mesh_model::duration::parse(s).ok())
        .map(pb_duration)
}

/// What translation needs for one proxy: the services it may see and the
/// rules that apply to them.
#[derive(Debug)]
pub struct Context<'a> {
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// The proxy.
    pub proxy: &'a ProxyNode,
    /// Services visible to the proxy (after Sidecar egress), by host.
    pub services: Vec<&'a Service>,
    /// VirtualServices by the FQDN of each host they name.
    pub virtual_services: BTreeMap<String, &'a Object<VirtualServiceSpec>>,
    /// DestinationRules by FQDN of their host.
    pub destination_rules: BTreeMap<String, &'a Object<DestinationRuleSpec>>,
}

impl<'a> Context<'a> {
    /// Indexes the snapshot for `proxy`.
    pub fn new(snapshot: &'a Snapshot, proxy: &'a ProxyNode) -> Self {
        let sidecar = sidecar_for(snapshot, proxy);
        let services = snapshot
            .services
            .values()
            .filter(|s| sidecar.is_none_or(|sc| egress_allows(sc, &proxy.namespace, s)))
            .collect();
        let mut virtual_services = BTreeMap::new();
        let mut destination_rules: BTreeMap<String, &Object<DestinationRuleSpec>> = BTreeMap::new();
        for r in &snapshot.config {
            match r {
                Resource::VirtualService(vs) => {
                    let gws = &vs.spec.gateways;
                    if !gws.is_empty() && !gws.iter().any(|g| g == "mesh") {
                        continue;
                    }
                    for h in &vs.spec.hosts {
                        virtual_services
                            .entry(host::fqdn(h, r.namespace(), CLUSTER_DOMAIN))
                            .or_insert(vs);
                    }
                }
                Resource::DestinationRule(dr) => {
                    let h = host::fqdn(&dr.spec.host, r.namespace(), CLUSTER_DOMAIN);
                    // A rule in the proxy's own namespace wins over others.
                    let own = r.namespace() == proxy.namespace;
                    if own || !destination_rules.contains_key(&h) {
                        destination_rules.insert(h, dr);
                    }
                }
                _ => {}
            }
        }
        Context {
            snapshot,
            proxy,
            services,
            virtual_services,
            destination_rules,
        }
    }

    /// A visible service by host.
    pub fn service(&self, host: &str) -> Option<&'a Service> {
        self.services.iter().copied().find(|s| s.host == host)
    }
}

fn sidecar_for<'a>(snapshot: &'a Snapshot, proxy: &ProxyNode) -> Option<&'a SidecarSpec> {
    let mut fallback = None;
    for r in &snapshot.config {
        let Resource::Sidecar(sc) = r else { continue };
        if r.namespace() != proxy.namespace {
            continue;
        }
        match &sc.spec.workload_selector {
            Some(sel) if labels_match(&sel.labels, &proxy.labels) => return Some(&sc.spec),
            Some(_) => {}
            None => fallback = Some(&sc.spec),
        }
    }
    fallback
}

/// Whether a Sidecar's egress hosts (`ns/host`, `./*`, `*/*`) admit a service.
fn egress_allows(sc: &SidecarSpec, proxy_ns: &str, svc: &Service) -> bool {
    if sc.egress.is_empty() {
        return true;
    }
    sc.egress.iter().flat_map(|e| &e.hosts).any(|h| {
        let (ns, pattern) = h.split_once('/').unwrap_or(("*", h));
        let ns_ok = ns == "*" || (ns == "." && svc.namespace == proxy_ns) || ns == svc.namespace;
        let full = host::fqdn(pattern, &svc.namespace, CLUSTER_DOMAIN);
        ns_ok && (host::host_matches(pattern, &svc.host) || host::host_matches(&full, &svc.host))
    })
}

/// Every resource of every type for one proxy.
pub fn generate(snapshot: &Snapshot, proxy: &ProxyNode) -> ProxyConfig {
    let ctx = Context::new(snapshot, proxy);
    let mut out = ProxyConfig::new();
    out.insert(LISTENER_TYPE, listeners::listeners(&ctx));
    out.insert(ROUTE_TYPE, routes::route_configs(&ctx));
    let (clusters, eds_names) = clusters::clusters(&ctx);
    out.insert(CLUSTER_TYPE, clusters);
    out.insert(ENDPOINT_TYPE, endpoints::load_assignments(&ctx, &eds_names));
    for resources in out.values_mut() {
        for (name, g) in resources.iter_mut() {
            g.name_id = name_id(name);
        }
    }
    out
}

/// The resources of `proxy` that read services' endpoints, for the
/// services of `hosts` only: their clusters (auto mTLS and the SANs read the
/// endpoints) and their load assignments. With everything but those
/// endpoints unchanged, these replace the same-named resources of an earlier
/// [`generate`] and the result equals a fresh one: listeners and routes must
/// not read endpoints (a test checks the equality).
pub fn endpoint_resources(
    snapshot: &Snapshot,
    proxy: &ProxyNode,
    hosts: &std::collections::BTreeSet<String>,
) -> (BTreeMap<String, Generated>, BTreeMap<String, Generated>) {
    let mut ctx = Context::new(snapshot, proxy);
    ctx.services.retain(|s| hosts.contains(&s.host));
    let (mut clusters, eds) = clusters::clusters(&ctx);
    let service_clusters: std::collections::HashSet<&str> =
        eds.iter().map(|c| c.name.as_str()).collect();
    clusters.retain(|name, _| service_clusters.contains(name.as_str()));
    let mut assignments = endpoints::load_assignments(&ctx, &eds);
    for (name, g) in clusters.iter_mut().chain(assignments.iter_mut()) {
        g.name_id = name_id(name);
    }
    (clusters, assignments)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::*;
    use crate::registry::{self, Workloads};
    use crate::vip::VipAllocator;

    /// A snapshot from YAML, VIPs assigned in memory.
    pub async fn snapshot(yaml: &str) -> Arc<Snapshot> {
        let config = mesh_model::parse_documents(yaml, "test").unwrap();
        let w = Workloads::new(Duration::from_secs(1));
        let pending = registry::collect(&config, &w.list());
        let mut vips = VipAllocator::default();
        let hosts: Vec<String> = pending.iter().map(|p| p.service.host.clone()).collect();
        let m = vips.ensure(&hosts).await.unwrap();
        let services = pending
            .into_iter()
            .map(|p| {
                let mut s = p.service;
                s.vip = m[&s.host];
                (s.host.clone(), s)
            })
            .collect();
        Arc::new(Snapshot {
            version: 1,
            config,
            services,
            errors: vec![],
            resource_version: 1,
            endpoint_changes: None,
        })
    }

    /// A mesh-proxy sidecar in `default`.
    pub fn proxy() -> ProxyNode {
        ProxyNode::from_node(&mesh_proto::envoy::pb::envoy::config::core::v3::Node {
            user_agent_name: "mesh-proxy".into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn sidecar_egress_hosts_narrow_what_a_proxy_sees() {
        let snap = snapshot(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec: {hosts: [a], ports: [{number: 80, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: other}
spec: {hosts: [b], ports: [{number: 80, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ['./*']}]}
",
        )
        .await;
        let p = proxy();
        let ctx = Context::new(&snap, &p);
        let hosts: Vec<&str> = ctx.services.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, vec!["a.default.svc.cluster.local"]);
        let mut elsewhere = proxy();
        elsewhere.namespace = "other".into();
        assert_eq!(
            Context::new(&snap, &elsewhere).services.len(),
            2,
            "no Sidecar there"
        );
    }
}
