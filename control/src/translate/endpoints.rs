//! EDS: one `ClusterLoadAssignment` per EDS cluster, endpoints grouped by
//! locality, with health and weight; priorities or locality weights for the
//! connecting proxy's locality ([`locality`]).

pub mod locality;

use std::collections::BTreeMap;

use mesh_model::common::labels_match;
use mesh_proto::envoy::pb::envoy::config::core::v3::HealthStatus;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::pb::google::protobuf::UInt32Value;

use super::clusters::{EdsCluster, socket_address};
use super::{Context, Generated, pack};
use crate::registry::Health;

/// The load assignments of every EDS cluster.
pub fn load_assignments(ctx: &Context<'_>, eds: &[EdsCluster]) -> BTreeMap<String, Generated> {
    eds.iter()
        .filter_map(|c| {
            let svc = ctx.service(&c.host)?;
            Some((
                c.name.clone(),
                pack(&assignment(c, svc, ctx.proxy.locality.as_deref())),
            ))
        })
        .collect()
}

fn assignment(
    c: &EdsCluster,
    svc: &crate::registry::Service,
    proxy_locality: Option<&str>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<String, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in &svc.endpoints {
        if ep.address.is_empty() || !labels_match(&c.labels, &ep.labels) {
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
            .push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket_address(&ep.address, ep.port_for(&c.port))),
                    ..Default::default()
                })),
                health_status: health as i32,
                load_balancing_weight: Some(UInt32Value { value: ep.weight }),
                ..Default::default()
            });
    }
    let mut endpoints: Vec<LocalityLbEndpoints> = by_locality
        .into_iter()
        .map(|(loc, lb_endpoints)| LocalityLbEndpoints {
            locality: (!loc.is_empty()).then(|| locality::parse(&loc)),
            lb_endpoints,
            ..Default::default()
        })
        .collect();
    // A proxy without a locality gets no locality-aware balancing (Istio's
    // rule too): every endpoint stays at priority 0.
    match (&c.locality, proxy_locality) {
        (Some(mode), Some(proxy)) => locality::apply(mode, &locality::parse(proxy), &mut endpoints),
        // The cluster is locality-weighted whatever the proxy: weigh the
        // localities by their endpoints.
        (Some(mode), None) if mode.weighted() => locality::weigh_by_endpoints(&mut endpoints),
        _ => {}
    }
    ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{ENDPOINT_TYPE, generate};
    use super::*;
    use prost::Message;

    #[tokio::test]
    async fn explicit_workload_endpoint_is_its_sidecar_inbound_port() {
        use crate::node::{Interception, ProxyNode};
        use crate::registry::{Workloads, collect};
        let server = ProxyNode {
            id: "reviews-1".into(),
            service_name: Some("reviews".into()),
            ips: vec!["127.0.0.1".into()],
            service_ports: vec![("http".into(), 9080)],
            interception: Interception::None,
            inbound_port: Some(18006),
            app_port: Some(18001),
            ..proxy()
        };
        let w = Workloads::new(std::time::Duration::from_secs(1));
        w.connected(&server);
        let mut snap = crate::snapshot::Snapshot::default();
        for p in collect(&[], &w.list()) {
            snap.services.insert(p.service.host.clone(), p.service);
        }
        let cfg = generate(&snap, &proxy());
        let la = ClusterLoadAssignment::decode(
            cfg[ENDPOINT_TYPE]["outbound|9080||reviews.default.svc.cluster.local"]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
            &la.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("no endpoint")
        };
        let addr = format!("{:?}", ep.address);
        assert!(
            addr.contains("127.0.0.1") && addr.contains("18006"),
            "{addr}"
        );
    }

    #[tokio::test]
    async fn subsets_pick_endpoints_by_label_with_ports_weights_and_locality() {
        let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http, targetPort: 8080}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, weight: 3, locality: eu/west/a}
  - {address: 10.0.0.2, labels: {version: v2}, ports: {http: 9090}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec: {host: backend, subsets: [{name: v2, labels: {version: v2}}]}
";
        let snap = snapshot(yaml).await;
        let cfg = generate(&snap, &proxy());
        let h = "backend.default.svc.cluster.local";
        let all = ClusterLoadAssignment::decode(
            cfg[ENDPOINT_TYPE][&format!("outbound|80||{h}")]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!(all.endpoints.len(), 2, "two localities");
        let eu = all.endpoints.iter().find(|l| l.locality.is_some()).unwrap();
        assert_eq!(eu.locality.as_ref().unwrap().zone, "west");
        assert_eq!(eu.lb_endpoints[0].load_balancing_weight.unwrap().value, 3);
        let v2 = ClusterLoadAssignment::decode(
            cfg[ENDPOINT_TYPE][&format!("outbound|80|v2|{h}")]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!(v2.endpoints.len(), 1);
        let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
            &v2.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("no endpoint")
        };
        let addr = format!("{:?}", ep.address);
        assert!(addr.contains("10.0.0.2") && addr.contains("9090"), "{addr}");
    }

    /// Two auto-registered servers of `reviews`, in `r1/z1` and `r1/z2`.
    fn servers_in_two_zones() -> crate::registry::Workloads {
        use crate::node::{Interception, ProxyNode};
        let w = crate::registry::Workloads::new(std::time::Duration::from_secs(1));
        for (id, ip, loc) in [("a", "10.0.0.1", "r1/z1/"), ("b", "10.0.0.2", "r1/z2/")] {
            w.connected(&ProxyNode {
                id: id.into(),
                service_name: Some("reviews".into()),
                ips: vec![ip.into()],
                service_ports: vec![("http".into(), 9080)],
                interception: Interception::Redirect,
                locality: Some(loc.into()),
                ..proxy()
            });
        }
        w
    }

    fn assignment_for(
        dr: &str,
        client_locality: Option<&str>,
        w: &crate::registry::Workloads,
    ) -> ClusterLoadAssignment {
        let mut snap = crate::snapshot::Snapshot {
            config: mesh_model::parse_documents(dr, "test").unwrap(),
            ..Default::default()
        };
        for p in crate::registry::collect(&snap.config, &w.list()) {
            snap.services.insert(p.service.host.clone(), p.service);
        }
        let mut client = proxy();
        client.locality = client_locality.map(str::to_string);
        let cfg = generate(&snap, &client);
        ClusterLoadAssignment::decode(
            cfg[ENDPOINT_TYPE]["outbound|9080||reviews.default.svc.cluster.local"]
                .any
                .value
                .as_slice(),
        )
        .unwrap()
    }

    fn by_zone(la: &ClusterLoadAssignment) -> Vec<(String, u32, Option<u32>)> {
        la.endpoints
            .iter()
            .map(|g| {
                (
                    g.locality.clone().unwrap_or_default().zone,
                    g.priority,
                    g.load_balancing_weight.map(|w| w.value),
                )
            })
            .collect()
    }

    const OUTLIER_DR: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}}
";

    #[tokio::test]
    async fn auto_registered_endpoints_fail_over_by_distance_from_the_client() {
        let w = servers_in_two_zones();
        let la = assignment_for(OUTLIER_DR, Some("r1/z1/"), &w);
        assert_eq!(
            by_zone(&la),
            [("z1".into(), 0, None), ("z2".into(), 1, None)],
            "the proxies' node.locality reached their endpoints"
        );
        let la = assignment_for(OUTLIER_DR, Some("r1/z2/"), &w);
        assert_eq!(
            by_zone(&la),
            [("z1".into(), 1, None), ("z2".into(), 0, None)]
        );
    }

    #[tokio::test]
    async fn no_priorities_without_outlier_detection_or_a_client_locality() {
        let w = servers_in_two_zones();
        let plain = OUTLIER_DR.replace(
            "trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}",
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
        );
        let la = assignment_for(&plain, Some("r1/z1/"), &w);
        assert!(la.endpoints.iter().all(|g| g.priority == 0));
        let la = assignment_for(OUTLIER_DR, None, &w);
        assert!(la.endpoints.iter().all(|g| g.priority == 0));
        let off = OUTLIER_DR.replace(
            "outlierDetection:",
            "loadBalancer: {localityLbSetting: {enabled: false}}, outlierDetection:",
        );
        let la = assignment_for(&off, Some("r1/z1/"), &w);
        assert!(la.endpoints.iter().all(|g| g.priority == 0));
    }

    #[tokio::test]
    async fn distribute_weights_the_clients_localities_without_priorities() {
        let w = servers_in_two_zones();
        let dr = OUTLIER_DR.replace(
            "outlierDetection:",
            "loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/z1/*', to: {'r1/z1/*': 80, 'r1/z2/*': 20}}]}}, outlierDetection:",
        );
        let la = assignment_for(&dr, Some("r1/z1/"), &w);
        assert_eq!(
            by_zone(&la),
            [("z1".into(), 0, Some(80)), ("z2".into(), 0, Some(20))]
        );
        // A client elsewhere matches no rule: localities by endpoint count.
        let la = assignment_for(&dr, Some("r2/z1/"), &w);
        assert_eq!(
            by_zone(&la),
            [("z1".into(), 0, Some(1)), ("z2".into(), 0, Some(1))]
        );
        // So does a client without a locality.
        assert_eq!(by_zone(&assignment_for(&dr, None, &w)), by_zone(&la));
    }
}
