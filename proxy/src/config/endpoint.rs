//! Endpoints (EDS `ClusterLoadAssignment`) and socket addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3 as xe;
use serde::Serialize;

use super::check::reject_set;
use super::{ConfigError, Ctx};

/// Health of an endpoint as reported by EDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    /// HEALTHY, or UNKNOWN (which Envoy also treats as healthy).
    Healthy,
    /// UNHEALTHY or TIMEOUT: never picked.
    Unhealthy,
    /// DRAINING: never picked for new requests.
    Draining,
    /// DEGRADED: picked only when no healthy endpoint is left.
    Degraded,
}

impl Health {
    fn from_proto(ctx: &Ctx, v: i32) -> Result<Self, ConfigError> {
        use xc::HealthStatus as H;
        Ok(match H::try_from(v) {
            Ok(H::Unknown | H::Healthy) => Health::Healthy,
            Ok(H::Unhealthy | H::Timeout) => Health::Unhealthy,
            Ok(H::Draining) => Health::Draining,
            Ok(H::Degraded) => Health::Degraded,
            Err(_) => return Err(ctx.invalid("health_status", format!("unknown value {v}"))),
        })
    }
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Address to connect to.
    pub address: SocketAddr,
    /// EDS health.
    pub health: Health,
    /// Load-balancing weight (1 when unset).
    pub weight: u32,
    /// Priority of its locality group (0 is the highest).
    pub priority: u32,
    /// `region/zone/sub_zone` of its locality (also the key of
    /// locality-weighted balancing).
    pub locality: String,
    /// Its locality's `load_balancing_weight` (used when the cluster is
    /// locality-weighted; a locality without one gets no traffic there,
    /// as in Envoy).
    pub locality_weight: Option<u32>,
}

/// The endpoints of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadAssignment {
    /// The cluster (or EDS service name) these endpoints belong to.
    pub cluster_name: String,
    /// All endpoints, in EDS order.
    pub endpoints: Vec<Endpoint>,
}

impl TryFrom<xe::ClusterLoadAssignment> for LoadAssignment {
    type Error = ConfigError;

    fn try_from(cla: xe::ClusterLoadAssignment) -> Result<Self, ConfigError> {
        let ctx = Ctx::new("ClusterLoadAssignment", &cla.cluster_name);
        load_assignment(&ctx, cla)
    }
}

pub(crate) fn load_assignment(
    ctx: &Ctx,
    cla: xe::ClusterLoadAssignment,
) -> Result<LoadAssignment, ConfigError> {
    let xe::ClusterLoadAssignment {
        cluster_name,
        endpoints,
        named_endpoints,
        policy,
    } = cla;
    reject_set!(ctx; named_endpoints, policy);
    let mut out = Vec::new();
    for (i, group) in endpoints.into_iter().enumerate() {
        let ctx = ctx.idx("endpoints", i);
        let xe::LocalityLbEndpoints {
            locality,
            metadata: _informational,
            lb_endpoints,
            load_balancing_weight,
            priority,
            proximity,
            lb_config,
        } = group;
        reject_set!(ctx; proximity, lb_config);
        let locality_weight = match load_balancing_weight {
            Some(w) if w.value == 0 => {
                return Err(ctx.invalid("load_balancing_weight", "must be >= 1"));
            }
            w => w.map(|w| w.value),
        };
        let locality = locality
            .map(|l| {
                let xc::Locality {
                    region,
                    zone,
                    sub_zone,
                } = l;
                format!("{region}/{zone}/{sub_zone}")
            })
            .unwrap_or_default();
        for (j, lbe) in lb_endpoints.into_iter().enumerate() {
            let ctx = ctx.idx("lb_endpoints", j);
            let xe::LbEndpoint {
                health_status,
                metadata: _informational,
                load_balancing_weight,
                host_identifier,
            } = lbe;
            let endpoint = match host_identifier {
                Some(xe::lb_endpoint::HostIdentifier::Endpoint(e)) => e,
                Some(xe::lb_endpoint::HostIdentifier::EndpointName(_)) => {
                    return Err(ctx.unsupported("endpoint_name"));
                }
                None => return Err(ctx.missing("endpoint")),
            };
            let ectx = ctx.at("endpoint");
            let xe::Endpoint {
                address,
                health_check_config,
                hostname,
                additional_addresses,
                observability_name,
            } = endpoint;
            reject_set!(ectx; health_check_config, additional_addresses);
            // hostname / observability_name only label the endpoint in stats.
            let _ = (hostname, observability_name);
            let address = socket_address(&ectx.at("address"), address)?;
            let weight = match load_balancing_weight {
                Some(w) if w.value == 0 => {
                    return Err(ctx.invalid("load_balancing_weight", "must be >= 1"));
                }
                Some(w) => w.value,
                None => 1,
            };
            out.push(Endpoint {
                address,
                health: Health::from_proto(&ctx, health_status)?,
                weight,
                priority,
                locality: locality.clone(),
                locality_weight,
            });
        }
    }
    Ok(LoadAssignment {
        cluster_name,
        endpoints: out,
    })
}

/// Converts an `Address` holding a numeric TCP `socket_address`.
pub(crate) fn socket_address(
    ctx: &Ctx,
    address: Option<xc::Address>,
) -> Result<SocketAddr, ConfigError> {
    let Some(xc::Address { address }) = address else {
        return Err(ctx.missing("socket_address"));
    };
    let sa = match address {
        Some(xc::address::Address::SocketAddress(sa)) => sa,
        Some(xc::address::Address::Pipe(_)) => return Err(ctx.unsupported("pipe")),
        Some(xc::address::Address::EnvoyInternalAddress(_)) => {
            return Err(ctx.unsupported("envoy_internal_address"));
        }
        None => return Err(ctx.missing("socket_address")),
    };
    let ctx = ctx.at("socket_address");
    let xc::SocketAddress {
        protocol,
        address,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath,
        port_specifier,
    } = sa;
    // protocol 0 is TCP; UDP is the only other value.
    reject_set!(ctx; protocol, resolver_name, ipv4_compat, network_namespace_filepath);
    let ip: IpAddr = address
        .parse()
        .map_err(|_| ctx.invalid("address", format!("{address:?} is not an IP address")))?;
    let port = match port_specifier {
        Some(xc::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| ctx.invalid("port_value", format!("{p} is out of range")))?,
        Some(xc::socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(ctx.unsupported("named_port"));
        }
        None => 0,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Shares the conversion with STATIC clusters' inline `load_assignment`.
pub(crate) fn inline_assignment(
    ctx: &Ctx,
    cla: xe::ClusterLoadAssignment,
) -> Result<Arc<LoadAssignment>, ConfigError> {
    load_assignment(ctx, cla).map(Arc::new)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sock(ip: &str, port: u32) -> xc::Address {
        xc::Address {
            address: Some(xc::address::Address::SocketAddress(xc::SocketAddress {
                address: ip.into(),
                port_specifier: Some(xc::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    pub(crate) fn cla(
        name: &str,
        eps: &[(&str, u32, i32, Option<u32>)],
    ) -> xe::ClusterLoadAssignment {
        xe::ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![xe::LocalityLbEndpoints {
                locality: Some(xc::Locality {
                    region: "r".into(),
                    zone: "z".into(),
                    sub_zone: String::new(),
                }),
                lb_endpoints: eps
                    .iter()
                    .map(|(ip, port, health, weight)| xe::LbEndpoint {
                        health_status: *health,
                        load_balancing_weight: weight.map(|value| {
                            mesh_proto::envoy::pb::google::protobuf::UInt32Value { value }
                        }),
                        host_identifier: Some(xe::lb_endpoint::HostIdentifier::Endpoint(
                            xe::Endpoint {
                                address: Some(sock(ip, *port)),
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

    #[test]
    fn endpoints_convert_with_health_and_weight() {
        let la = LoadAssignment::try_from(cla(
            "outbound|9080||r",
            &[
                ("10.0.0.1", 9080, 1, Some(3)),
                ("10.0.0.2", 9080, 2, None),
                ("10.0.0.3", 9080, 3, None),
            ],
        ))
        .unwrap();
        assert_eq!(la.endpoints.len(), 3);
        assert_eq!(la.endpoints[0].weight, 3);
        assert_eq!(la.endpoints[0].health, Health::Healthy);
        assert_eq!(la.endpoints[1].health, Health::Unhealthy);
        assert_eq!(la.endpoints[1].weight, 1);
        assert_eq!(la.endpoints[2].health, Health::Draining);
        assert_eq!(la.endpoints[0].locality, "r/z/");
        assert_eq!(la.endpoints[0].locality_weight, None);
    }

    #[test]
    fn locality_weight_is_read_and_zero_is_refused() {
        let mut c = cla("c", &[("10.0.0.1", 80, 1, None)]);
        c.endpoints[0].load_balancing_weight =
            Some(mesh_proto::envoy::pb::google::protobuf::UInt32Value { value: 80 });
        let la = LoadAssignment::try_from(c.clone()).unwrap();
        assert_eq!(la.endpoints[0].locality_weight, Some(80));
        c.endpoints[0].load_balancing_weight =
            Some(mesh_proto::envoy::pb::google::protobuf::UInt32Value { value: 0 });
        let err = LoadAssignment::try_from(c).unwrap_err();
        assert!(
            err.to_string()
                .contains("endpoints[0].load_balancing_weight"),
            "{err}"
        );
    }

    #[test]
    fn named_endpoints_are_rejected_by_name() {
        let mut c = cla("c", &[]);
        c.named_endpoints.insert("x".into(), Default::default());
        let err = LoadAssignment::try_from(c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ClusterLoadAssignment c: unsupported field named_endpoints"
        );
    }

    #[test]
    fn hostname_endpoint_is_rejected_as_not_an_ip() {
        let err = LoadAssignment::try_from(cla("c", &[("reviews", 80, 1, None)])).unwrap_err();
        assert!(
            err.to_string()
                .contains("endpoints[0].lb_endpoints[0].endpoint.address.socket_address"),
            "{err}"
        );
    }
}
