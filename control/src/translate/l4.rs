//! Outbound filter chains of non-HTTP service ports: a VirtualService's
//! `tcp` routes (opaque TCP: `tcp_proxy` to the first matching route's
//! cluster or `weighted_clusters`) and `tls` routes (unterminated TLS:
//! one chain per route matched on `server_names`, the SNI the TLS
//! inspector reads, and a fallback chain without `server_names` that
//! passes the TLS through to the service's own cluster, as Istio does).

use std::collections::BTreeSet;

use mesh_model::Object;
use mesh_model::common::labels_match;
use mesh_model::host;
use mesh_model::naming;
use mesh_model::networking::{L4MatchAttributes, RouteDestination, TlsMatchAttributes};
use mesh_proto::envoy::pb::envoy::config::core::v3::CidrRange;
use mesh_proto::envoy::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, filter,
};
use mesh_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy,
};
use mesh_proto::envoy::pb::google::protobuf::UInt32Value;

use super::{Context, pack};
use crate::registry::{CLUSTER_DOMAIN, Service, ServicePort};

/// Name of Envoy's TCP proxy network filter.
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// Where an L4 route sends a connection: one cluster or a weighted split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4Target {
    /// One cluster.
    Cluster(String),
    /// Clusters with their weights (each > 0).
    Weighted(Vec<(String, u32)>),
}

/// Whether a non-HTTP port carries TLS: its ServiceEntry port says
/// `protocol: TLS` or `HTTPS`, or (without a protocol) its name starts with
/// `tls` or `https` (Istio's port-name convention).
pub fn is_tls_port(ctx: &Context<'_>, svc: &Service, port: &ServicePort) -> bool {
    let declared = super::dns::service_entry(ctx, svc).and_then(|se| {
        se.spec
            .ports
            .iter()
            .find(|p| p.number == port.number)
            .and_then(|p| p.protocol.clone())
    });
    let proto = declared.unwrap_or_else(|| {
        port.name
            .split('-')
            .next()
            .unwrap_or(&port.name)
            .to_string()
    });
    matches!(proto.to_ascii_lowercase().as_str(), "tls" | "https")
}

/// The outbound chains of a non-HTTP port `port` of `svc` (the chain named
/// `name` matches `<VIP>/32:<port>`): TLS routes by SNI on a TLS port,
/// else the first matching TCP route, else the service's own cluster.
pub fn outbound_chains(
    ctx: &Context<'_>,
    svc: &Service,
    port: &ServicePort,
    name: &str,
) -> Vec<FilterChain> {
    let own = naming::outbound_cluster_name(port.number, None, &svc.host);
    let vs = ctx.virtual_services.get(&svc.host).copied();
    let vip_match = |server_names: Vec<String>| FilterChainMatch {
        prefix_ranges: vec![CidrRange {
            address_prefix: svc.vip.to_string(),
            prefix_len: Some(UInt32Value { value: 32 }),
        }],
        destination_port: Some(UInt32Value { value: port.number }),
        server_names,
        ..Default::default()
    };
    let mut chains = Vec::new();
    if is_tls_port(ctx, svc, port) {
        for (server_names, target) in tls_routes(ctx, vs, port.number) {
            chains.push(FilterChain {
                name: name.to_string(),
                filter_chain_match: Some(vip_match(server_names)),
                filters: vec![tcp_proxy_filter(name, target)],
                ..Default::default()
            });
        }
    }
    let target = vs
        .and_then(|vs| tcp_route(ctx, vs, port.number, svc))
        .unwrap_or(L4Target::Cluster(own));
    chains.push(FilterChain {
        name: name.to_string(),
        filter_chain_match: Some(vip_match(Vec::new())),
        filters: vec![tcp_proxy_filter(name, target)],
        ..Default::default()
    });
    chains
}

/// Chains that catch TLS to a service whose clients do not dial its VIP
/// (an external host resolved by real DNS): any destination address on a
/// TLS port, matched by SNI only. One chain per (port, SNI): the first
/// service or route naming an SNI wins, so no two chains match alike
/// (Envoy refuses duplicate matches).
pub fn sni_only_chains(ctx: &Context<'_>) -> Vec<FilterChain> {
    let mut seen: BTreeSet<(u32, String)> = BTreeSet::new();
    let mut chains = Vec::new();
    for svc in &ctx.services {
        for port in &svc.ports {
            if port.protocol.is_http() || !is_tls_port(ctx, svc, port) {
                continue;
            }
            let name = format!("outbound|{}||{}", port.number, svc.host);
            let vs = ctx.virtual_services.get(&svc.host).copied();
            let mut routes = tls_routes(ctx, vs, port.number);
            // Unrouted SNI equal to the service's host goes to the service.
            routes.push((
                vec![svc.host.clone()],
                L4Target::Cluster(naming::outbound_cluster_name(port.number, None, &svc.host)),
            ));
            for (names, target) in routes {
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| seen.insert((port.number, n.clone())))
                    .collect();
                if names.is_empty() {
                    continue;
                }
                chains.push(FilterChain {
                    name: name.clone(),
                    filter_chain_match: Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: port.number }),
                        server_names: names,
                        ..Default::default()
                    }),
                    filters: vec![tcp_proxy_filter(&name, target)],
                    ..Default::default()
                });
            }
        }
    }
    chains
}

/// The `tls` routes of `vs` that apply to this proxy and `port`, as (SNI
/// values, target); an SNI already taken by an earlier route is dropped.
fn tls_routes(
    ctx: &Context<'_>,
    vs: Option<&Object<mesh_model::networking::VirtualServiceSpec>>,
    port: u32,
) -> Vec<(Vec<String>, L4Target)> {
    let Some(vs) = vs else { return Vec::new() };
    let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for route in &vs.spec.tls {
        let Some(target) = target(ctx, ns, &route.route, port) else {
            continue;
        };
        let names: Vec<String> = route
            .matches
            .iter()
            .filter(|m| tls_match_applies(ctx, m, port))
            .flat_map(|m| m.sni_hosts.iter())
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| seen.insert(h.clone()))
            .collect();
        if !names.is_empty() {
            out.push((names, target));
        }
    }
    out
}

fn source_applies(
    ctx: &Context<'_>,
    labels: &std::collections::BTreeMap<String, String>,
    namespace: Option<&String>,
    gateways: &[String],
) -> bool {
    labels_match(labels, &ctx.proxy.labels)
        && namespace.is_none_or(|n| *n == ctx.proxy.namespace)
        && (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
}

fn tls_match_applies(ctx: &Context<'_>, m: &TlsMatchAttributes, port: u32) -> bool {
    m.port.is_none_or(|p| p == port)
        && source_applies(
            ctx,
            &m.source_labels,
            m.source_namespace.as_ref(),
            &m.gateways,
        )
}

fn l4_match_applies(ctx: &Context<'_>, m: &L4MatchAttributes, port: u32, svc: &Service) -> bool {
    m.port.is_none_or(|p| p == port)
        && source_applies(
            ctx,
            &m.source_labels,
            m.source_namespace.as_ref(),
            &m.gateways,
        )
        && (m.destination_subnets.is_empty()
            || m.destination_subnets
                .iter()
                .any(|s| subnet_contains(s, svc)))
}

/// Whether a `destinationSubnets` entry (`10.0.0.0/8` or an address) holds
/// the service's VIP. The chain matches the VIP, so a subnet elsewhere
/// cannot select it.
fn subnet_contains(subnet: &str, svc: &Service) -> bool {
    let (addr, len) = subnet.split_once('/').unwrap_or((subnet, "32"));
    let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    u32::from(addr) & mask == u32::from(svc.vip) & mask
}

/// The first `tcp` route whose matches apply (a route without matches
/// applies to everything).
fn tcp_route(
    ctx: &Context<'_>,
    vs: &Object<mesh_model::networking::VirtualServiceSpec>,
    port: u32,
    svc: &Service,
) -> Option<L4Target> {
    let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
    vs.spec
        .tcp
        .iter()
        .find(|r| {
            r.matches.is_empty()
                || r.matches
                    .iter()
                    .any(|m| l4_match_applies(ctx, m, port, svc))
        })
        .and_then(|r| target(ctx, ns, &r.route, port))
}

/// The cluster(s) of weighted destinations written in namespace `ns`:
/// zero weights are dropped, no weights at all split evenly.
fn target(ctx: &Context<'_>, ns: &str, dests: &[RouteDestination], port: u32) -> Option<L4Target> {
    let unweighted = dests.iter().all(|d| d.weight.is_none());
    let mut clusters: Vec<(String, u32)> = dests
        .iter()
        .map(|d| {
            let w = if unweighted {
                1
            } else {
                d.weight.unwrap_or(0).max(0) as u32
            };
            (cluster_for(ctx, ns, &d.destination, port), w)
        })
        .filter(|(_, w)| *w > 0)
        .collect();
    match clusters.len() {
        0 => None,
        1 => clusters.pop().map(|(c, _)| L4Target::Cluster(c)),
        _ => Some(L4Target::Weighted(clusters)),
    }
}

/// The cluster of a destination: its port if given, else the routed port
/// when the service has it, else the service's only port.
fn cluster_for(
    ctx: &Context<'_>,
    ns: &str,
    d: &mesh_model::networking::Destination,
    port: u32,
) -> String {
    let h = host::fqdn(&d.host, ns, CLUSTER_DOMAIN);
    let p = d
        .port
        .as_ref()
        .map(|p| p.number)
        .unwrap_or_else(|| match ctx.service(&h) {
            Some(s) if s.ports.len() == 1 && s.ports[0].number != port => s.ports[0].number,
            _ => port,
        });
    naming::outbound_cluster_name(p, d.subset.as_deref(), &h)
}

/// `envoy.filters.network.tcp_proxy` to `target`.
pub fn tcp_proxy_filter(stat_prefix: &str, target: L4Target) -> Filter {
    let cluster_specifier = match target {
        L4Target::Cluster(c) => tcp_proxy::ClusterSpecifier::Cluster(c),
        L4Target::Weighted(ws) => {
            tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                clusters: ws
                    .into_iter()
                    .map(
                        |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                            name,
                            weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            })
        }
    };
    let t = TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&t).any)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{LISTENER_TYPE, generate};
    use super::*;
    use mesh_proto::envoy::pb::envoy::config::listener::v3::Listener;
    use prost::Message;

    fn outbound(cfg: &super::super::ProxyConfig) -> Listener {
        Listener::decode(cfg[LISTENER_TYPE]["virtualOutbound"].any.value.as_slice()).unwrap()
    }

    fn target_of(chain: &FilterChain) -> L4Target {
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("typed config expected")
        };
        assert_eq!(chain.filters[0].name, TCP_PROXY);
        match TcpProxy::decode(any.value.as_slice())
            .unwrap()
            .cluster_specifier
            .unwrap()
        {
            tcp_proxy::ClusterSpecifier::Cluster(c) => L4Target::Cluster(c),
            tcp_proxy::ClusterSpecifier::WeightedClusters(w) => {
                L4Target::Weighted(w.clusters.into_iter().map(|c| (c.name, c.weight)).collect())
            }
        }
    }

    fn chains_named<'a>(l: &'a Listener, name: &str) -> Vec<&'a FilterChain> {
        l.filter_chains.iter().filter(|c| c.name == name).collect()
    }

    const DB: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec: {hosts: [db], ports: [{number: 5432, name: tcp-db}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

    #[tokio::test]
    async fn tcp_route_weights_become_weighted_clusters_of_subsets() {
        let yaml = format!(
            "{DB}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db]
  tcp:
  - match: [{{port: 5432}}]
    route:
    - {{destination: {{host: db, subset: v1}}, weight: 80}}
    - {{destination: {{host: db, subset: v2}}, weight: 20}}
    - {{destination: {{host: db}}, weight: 0}}
"
        );
        let snap = snapshot(&yaml).await;
        let l = outbound(&generate(&snap, &proxy()));
        let chains = chains_named(&l, "outbound|5432||db.default.svc.cluster.local");
        assert_eq!(chains.len(), 1);
        assert_eq!(
            target_of(chains[0]),
            L4Target::Weighted(vec![
                ("outbound|5432|v1|db.default.svc.cluster.local".into(), 80),
                ("outbound|5432|v2|db.default.svc.cluster.local".into(), 20),
            ])
        );
    }

    #[tokio::test]
    async fn first_tcp_route_whose_match_applies_wins_else_the_service_cluster() {
        let yaml = format!(
            "{DB}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db]
  tcp:
  - match: [{{sourceLabels: {{app: other}}}}]
    route: [{{destination: {{host: db, subset: v2}}}}]
  - match: [{{port: 9999}}]
    route: [{{destination: {{host: db, subset: v2}}}}]
  - match: [{{port: 5432, sourceLabels: {{app: web}}}}]
    route: [{{destination: {{host: db, subset: v1}}}}]
"
        );
        let snap = snapshot(&yaml).await;
        let mut web = proxy();
        web.labels.insert("app".into(), "web".into());
        let l = outbound(&generate(&snap, &web));
        let chains = chains_named(&l, "outbound|5432||db.default.svc.cluster.local");
        assert_eq!(
            target_of(chains[0]),
            L4Target::Cluster("outbound|5432|v1|db.default.svc.cluster.local".into())
        );
        // Another workload matches none of the routes.
        let l = outbound(&generate(&snap, &proxy()));
        let chains = chains_named(&l, "outbound|5432||db.default.svc.cluster.local");
        assert_eq!(
            target_of(chains[0]),
            L4Target::Cluster("outbound|5432||db.default.svc.cluster.local".into())
        );
    }

    const TLS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [a.example, b.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext}
spec:
  hosts: [a.example, b.example]
  tls:
  - match: [{port: 443, sniHosts: [a.example]}]
    route: [{destination: {host: a.example}}]
  - match: [{port: 443, sniHosts: [b.example, a.example]}]
    route: [{destination: {host: b.example}}]
";

    #[tokio::test]
    async fn tls_routes_become_sni_chains_with_a_passthrough_fallback() {
        let snap = snapshot(TLS).await;
        let l = outbound(&generate(&snap, &proxy()));
        let a_vip = snap.services["a.example"].vip.to_string();
        let sni = |c: &FilterChain| {
            let m = c.filter_chain_match.as_ref().unwrap();
            let on_vip = m
                .prefix_ranges
                .first()
                .map(|r| r.address_prefix.clone())
                .unwrap_or_default();
            (on_vip, m.server_names.clone(), target_of(c))
        };
        let a: Vec<_> = chains_named(&l, "outbound|443||a.example")
            .into_iter()
            .map(sni)
            .collect();
        let a_cluster = || L4Target::Cluster("outbound|443||a.example".into());
        let b_cluster = || L4Target::Cluster("outbound|443||b.example".into());
        assert_eq!(
            a,
            vec![
                (a_vip.clone(), vec!["a.example".to_string()], a_cluster()),
                // a.example is taken by the first route.
                (a_vip.clone(), vec!["b.example".to_string()], b_cluster()),
                // No SNI match: the TLS goes on to the service as it is.
                (a_vip.clone(), vec![], a_cluster()),
                // Clients that dialled the real address, by SNI alone; one
                // chain per SNI across services.
                (String::new(), vec!["a.example".to_string()], a_cluster()),
                (String::new(), vec!["b.example".to_string()], b_cluster()),
            ]
        );
        assert!(
            l.listener_filters
                .iter()
                .any(|f| f.name == "envoy.filters.listener.tls_inspector")
        );
        let any_address: Vec<_> = l
            .filter_chains
            .iter()
            .filter(|c| {
                c.filter_chain_match
                    .as_ref()
                    .unwrap()
                    .prefix_ranges
                    .is_empty()
            })
            .flat_map(|c| c.filter_chain_match.as_ref().unwrap().server_names.clone())
            .collect();
        assert_eq!(any_address, ["a.example", "b.example"], "no duplicates");
    }

    #[tokio::test]
    async fn https_port_name_marks_a_tls_port_and_plain_tcp_gets_no_sni_chains() {
        let snap = snapshot(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec: {hosts: [web.example], ports: [{number: 443, name: https-web}, {number: 6379, name: redis}]}
",
        )
        .await;
        let svc = &snap.services["web.example"];
        let p = proxy();
        let ctx = Context::new(&snap, &p);
        assert!(is_tls_port(&ctx, svc, &svc.ports[0]));
        assert!(!is_tls_port(&ctx, svc, &svc.ports[1]));
        let l = outbound(&generate(&snap, &p));
        assert_eq!(chains_named(&l, "outbound|6379||web.example").len(), 1);
        assert_eq!(chains_named(&l, "outbound|443||web.example").len(), 2);
    }
}
