//! EDS: one `ClusterLoadAssignment` per EDS cluster, endpoints grouped by
//! locality, with health and weight.

use std::collections::BTreeMap;

use mesh_model::common::labels_match;
use mesh_proto::envoy::pb::envoy::config::core::v3::{HealthStatus, Locality};
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
            Some((c.name.clone(), pack(&assignment(c, svc))))
        })
        .collect()
}

fn assignment(c: &EdsCluster, svc: &crate::registry::Service) -> ClusterLoadAssignment {
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
    ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: by_locality
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
            .collect(),
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
}
