//! DNS-resolved services: a ServiceEntry with `resolution: DNS` gets
//! `STRICT_DNS` clusters, `DNS_ROUND_ROBIN` `LOGICAL_DNS` ones, with the
//! endpoints' addresses (host names or IPs), or the service's host when it
//! lists no endpoints, in the cluster's own `load_assignment`: the proxy
//! resolves them, no EDS is involved.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_model::common::labels_match;
use mesh_model::host;
use mesh_model::networking::{Resolution, ServiceEntrySpec};
use mesh_model::{Object, Resource};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use mesh_proto::envoy::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily,
};
use mesh_proto::envoy::pb::envoy::config::core::v3::{HealthStatus, Locality};
use mesh_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::pb::google::protobuf::UInt32Value;

use super::clusters::socket_address;
use super::{Context, pb_duration};
use crate::registry::{CLUSTER_DOMAIN, Health, Service, ServicePort};

/// How often the proxy resolves a DNS cluster (Istio's default
/// `dnsRefreshRate`).
pub const DNS_REFRESH_RATE: Duration = Duration::from_secs(60);

/// The ServiceEntry that defines `svc`, if one does (same namespace, one of
/// its hosts).
pub fn service_entry<'a>(ctx: &Context<'a>, svc: &Service) -> Option<&'a Object<ServiceEntrySpec>> {
    ctx.snapshot.config.iter().find_map(|r| match r {
        Resource::ServiceEntry(se)
            if r.namespace() == svc.namespace
                && se
                    .spec
                    .hosts
                    .iter()
                    .any(|h| host::fqdn(h, r.namespace(), CLUSTER_DOMAIN) == svc.host) =>
        {
            Some(se)
        }
        _ => None,
    })
}

/// Whether the service's endpoints are resolved by DNS (`LOGICAL_DNS`
/// when `Some(true)`, `STRICT_DNS` when `Some(false)`).
fn dns_kind(ctx: &Context<'_>, svc: &Service) -> Option<bool> {
    match service_entry(ctx, svc)?.spec.resolution? {
        Resolution::Dns => Some(false),
        Resolution::DnsRoundRobin => Some(true),
        Resolution::None | Resolution::Static => None,
    }
}

/// Turns an outbound cluster of `svc` into a DNS cluster when the service
/// is DNS-resolved; returns whether it did (then the cluster takes no EDS).
/// `labels` select a subset's endpoints.
// `dns_refresh_rate` and `respect_dns_ttl` are deprecated in favour of the
// `envoy.clusters.dns` extension, which Envoys before 1.33 lack; Istio still
// sets the plain fields, and every Envoy accepts them.
#[allow(deprecated)]
pub fn make_dns_cluster(
    ctx: &Context<'_>,
    svc: &Service,
    port: &ServicePort,
    labels: &BTreeMap<String, String>,
    cluster: &mut Cluster,
) -> bool {
    let Some(logical) = dns_kind(ctx, svc) else {
        return false;
    };
    let kind = if logical {
        DiscoveryType::LogicalDns
    } else {
        DiscoveryType::StrictDns
    };
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
    cluster.eds_cluster_config = None;
    cluster.dns_refresh_rate = Some(pb_duration(DNS_REFRESH_RATE));
    cluster.respect_dns_ttl = true;
    cluster.dns_lookup_family = DnsLookupFamily::V4Only as i32;
    cluster.load_assignment = Some(load_assignment(&cluster.name, svc, port, labels, logical));
    true
}

fn load_assignment(
    name: &str,
    svc: &Service,
    port: &ServicePort,
    labels: &BTreeMap<String, String>,
    logical: bool,
) -> ClusterLoadAssignment {
    let lb = |address: &str, port: u32, weight: u32, health: HealthStatus| LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address, port)),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    };
    let mut by_locality: BTreeMap<String, Vec<LbEndpoint>> = BTreeMap::new();
    if svc.endpoints.is_empty() {
        // No endpoints: the host itself is the DNS name.
        let p = port.target_port.unwrap_or(port.number);
        by_locality.entry(String::new()).or_default().push(lb(
            &svc.host,
            p,
            1,
            HealthStatus::Healthy,
        ));
    }
    for ep in &svc.endpoints {
        if ep.address.is_empty() || !labels_match(labels, &ep.labels) {
            continue;
        }
        let health = match ep.health {
            Health::Healthy => HealthStatus::Healthy,
            Health::Unhealthy => HealthStatus::Unhealthy,
            Health::Draining => HealthStatus::Draining,
        };
        by_locality
            .entry(ep.locality.clone().unwrap_or_default())
            .or_default()
            .push(lb(&ep.address, ep.port_for(port), ep.weight, health));
    }
    let mut endpoints: Vec<LocalityLbEndpoints> = by_locality
        .into_iter()
        .map(|(loc, lb_endpoints)| {
            let mut parts = loc.splitn(3, '/');
            LocalityLbEndpoints {
                locality: (!loc.is_empty()).then(|| Locality {
                    region: parts.next().unwrap_or_default().into(),
                    zone: parts.next().unwrap_or_default().into(),
                    sub_zone: parts.next().unwrap_or_default().into(),
                }),
                lb_endpoints,
                ..Default::default()
            }
        })
        .collect();
    if logical {
        // LOGICAL_DNS takes exactly one endpoint: the first.
        endpoints.truncate(1);
        if let Some(group) = endpoints.first_mut() {
            group.lb_endpoints.truncate(1);
        }
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{CLUSTER_TYPE, ENDPOINT_TYPE, generate};
    use super::*;
    use prost::Message;

    fn cluster(cfg: &super::super::ProxyConfig, name: &str) -> Cluster {
        Cluster::decode(cfg[CLUSTER_TYPE][name].any.value.as_slice()).unwrap()
    }

    fn addresses(c: &Cluster) -> Vec<String> {
        c.load_assignment
            .iter()
            .flat_map(|la| &la.endpoints)
            .flat_map(|g| &g.lb_endpoints)
            .map(|e| format!("{:?}", e.host_identifier))
            .collect()
    }

    #[tokio::test]
    #[allow(deprecated)] // dns_refresh_rate, respect_dns_ttl: see make_dns_cluster
    async fn dns_service_entry_becomes_strict_dns_cluster_with_its_endpoints_not_eds() {
        let snap = snapshot(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints:
  - {address: a.api.example, labels: {version: v1}}
  - {address: b.api.example, ports: {tls: 8443}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec: {host: api.example, subsets: [{name: v2, labels: {version: v2}}]}
",
        )
        .await;
        let cfg = generate(&snap, &proxy());
        let c = cluster(&cfg, "outbound|443||api.example");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert!(c.eds_cluster_config.is_none());
        assert_eq!(c.dns_refresh_rate, Some(pb_duration(DNS_REFRESH_RATE)));
        assert!(c.respect_dns_ttl);
        let all = addresses(&c);
        assert_eq!(all.len(), 2);
        assert!(all[0].contains("a.api.example") && all[0].contains("443"));
        assert!(all[1].contains("b.api.example") && all[1].contains("8443"));
        let v2 = addresses(&cluster(&cfg, "outbound|443|v2|api.example"));
        assert_eq!(v2.len(), 1);
        assert!(v2[0].contains("b.api.example"));
        assert!(
            !cfg[ENDPOINT_TYPE].contains_key("outbound|443||api.example"),
            "no EDS for a DNS cluster"
        );
    }

    #[tokio::test]
    async fn dns_round_robin_without_endpoints_is_one_logical_dns_endpoint_for_the_host() {
        let snap = snapshot(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example, web.example]
  ports: [{number: 80, name: http, targetPort: 8080}]
  resolution: DNS_ROUND_ROBIN
",
        )
        .await;
        let cfg = generate(&snap, &proxy());
        let c = cluster(&cfg, "outbound|80||web.example");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
        );
        let a = addresses(&c);
        assert_eq!(a.len(), 1);
        assert!(
            a[0].contains("\"web.example\"") && a[0].contains("8080"),
            "{a:?}"
        );
        // STATIC resolution stays EDS.
        let snap = snapshot(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
",
        )
        .await;
        let c = cluster(&generate(&snap, &proxy()), "outbound|80||api.example");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
    }
}
