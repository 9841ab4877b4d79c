//! The xDS resources of the benchmark's sidecar pair, shaped like what meshd
//! emits for one HTTP service (docs/xds.md): the client side has a listener
//! → RDS route → EDS cluster originating Istio mutual TLS; the server side
//! has a listener terminating mutual TLS (client certificate required) →
//! RDS route → static `inbound|80||` cluster to the backend. Secrets are
//! referenced by Istio's SDS names `default` / `ROOTCA` without a config
//! source: Envoy resolves them to its static bootstrap secrets, mesh-proxy
//! to its SVID.

use std::net::SocketAddr;

use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3 as xe;
use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::envoy::extensions::filters::http::router::v3 as xrouter;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xhcm;
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
use mesh_proto::envoy::pb::envoy::r#type::matcher::v3 as xm;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use prost::{Message, Name};

use super::xds::NodeResources;

/// The service the pair carries.
pub const HOST: &str = "backend.bench.svc.cluster.local";
/// The client side's outbound cluster.
pub const OUTBOUND_CLUSTER: &str = "outbound|80||backend.bench.svc.cluster.local";
/// The server side's inbound cluster.
pub const INBOUND_CLUSTER: &str = "inbound|80||";

fn any<T: Message + Name>(m: &T) -> wkt::Any {
    wkt::Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> xc::ConfigSource {
    xc::ConfigSource {
        config_source_specifier: Some(xc::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        resource_api_version: xc::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn address(addr: SocketAddr) -> xc::Address {
    xc::Address {
        address: Some(xc::address::Address::SocketAddress(xc::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(xc::socket_address::PortSpecifier::PortValue(
                addr.port().into(),
            )),
            ..Default::default()
        })),
    }
}

fn cla(cluster: &str, endpoint: SocketAddr) -> xe::ClusterLoadAssignment {
    xe::ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![xe::LocalityLbEndpoints {
            lb_endpoints: vec![xe::LbEndpoint {
                host_identifier: Some(xe::lb_endpoint::HostIdentifier::Endpoint(xe::Endpoint {
                    address: Some(address(endpoint)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn sds(name: &str) -> xt::SdsSecretConfig {
    xt::SdsSecretConfig {
        name: name.into(),
        sds_config: None,
    }
}

fn common_tls(peer_id: Option<&str>, alpn: &[&str]) -> xt::CommonTlsContext {
    let san = peer_id.map(|id| xt::SubjectAltNameMatcher {
        san_type: xt::subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(xm::StringMatcher {
            ignore_case: false,
            match_pattern: Some(xm::string_matcher::MatchPattern::Exact(id.into())),
        }),
        oid: String::new(),
    });
    xt::CommonTlsContext {
        alpn_protocols: alpn.iter().map(|a| a.to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(
            xt::common_tls_context::ValidationContextType::CombinedValidationContext(
                xt::common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(xt::CertificateValidationContext {
                        match_typed_subject_alt_names: san.into_iter().collect(),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds("ROOTCA")),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn hcm(route: &str) -> xl::Filter {
    let hcm = xhcm::HttpConnectionManager {
        stat_prefix: route.into(),
        route_specifier: Some(xhcm::http_connection_manager::RouteSpecifier::Rds(
            xhcm::Rds {
                route_config_name: route.into(),
                config_source: Some(ads()),
            },
        )),
        http_filters: vec![xhcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(xhcm::http_filter::ConfigType::TypedConfig(any(
                &xrouter::Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    xl::Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

fn route_table(name: &str, cluster: &str) -> xr::RouteConfiguration {
    xr::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![xr::VirtualHost {
            name: format!("{HOST}:80"),
            domains: vec!["*".into()],
            routes: vec![xr::Route {
                r#match: Some(xr::RouteMatch {
                    path_specifier: Some(xr::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(xr::route::Action::Route(xr::RouteAction {
                    cluster_specifier: Some(xr::route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listener(name: &str, bind: SocketAddr, chain: xl::FilterChain) -> xl::Listener {
    xl::Listener {
        name: name.into(),
        address: Some(address(bind)),
        filter_chains: vec![chain],
        ..Default::default()
    }
}

fn node(
    listener: &xl::Listener,
    route: &xr::RouteConfiguration,
    cluster: &xcl::Cluster,
    cla: Option<&xe::ClusterLoadAssignment>,
) -> NodeResources {
    let mut res = NodeResources::new();
    res.insert(
        xl::Listener::type_url(),
        vec![(listener.name.clone(), any(listener))],
    );
    res.insert(
        xr::RouteConfiguration::type_url(),
        vec![(route.name.clone(), any(route))],
    );
    res.insert(
        xcl::Cluster::type_url(),
        vec![(cluster.name.clone(), any(cluster))],
    );
    if let Some(cla) = cla {
        res.insert(
            xe::ClusterLoadAssignment::type_url(),
            vec![(cla.cluster_name.clone(), any(cla))],
        );
    }
    res
}

/// The client sidecar: plain HTTP in on `listen`, mutual TLS out to
/// `server` whose certificate must carry `server_id`.
pub fn client_side(listen: SocketAddr, server: SocketAddr, server_id: &str) -> NodeResources {
    let l = listener(
        "bench_outbound",
        listen,
        xl::FilterChain {
            name: "bench_outbound".into(),
            filters: vec![hcm("80")],
            ..Default::default()
        },
    );
    let route = route_table("80", OUTBOUND_CLUSTER);
    let cluster = xcl::Cluster {
        name: OUTBOUND_CLUSTER.into(),
        cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(xcl::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        lb_policy: xcl::cluster::LbPolicy::RoundRobin as i32,
        connect_timeout: Some(wkt::Duration {
            seconds: 10,
            nanos: 0,
        }),
        transport_socket: Some(xc::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(xc::transport_socket::ConfigType::TypedConfig(any(
                &xt::UpstreamTlsContext {
                    common_tls_context: Some(common_tls(
                        Some(server_id),
                        &["istio-peer-exchange", "istio"],
                    )),
                    sni: format!("outbound_.80_._.{HOST}"),
                    ..Default::default()
                },
            ))),
        }),
        ..Default::default()
    };
    node(&l, &route, &cluster, Some(&cla(OUTBOUND_CLUSTER, server)))
}

/// The server sidecar: mutual TLS in on `listen` (client certificate
/// required), plain HTTP to `backend`.
pub fn server_side(listen: SocketAddr, backend: SocketAddr) -> NodeResources {
    let l = listener(
        "bench_inbound",
        listen,
        xl::FilterChain {
            name: INBOUND_CLUSTER.into(),
            filters: vec![hcm("inbound|80")],
            transport_socket: Some(xc::TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(xc::transport_socket::ConfigType::TypedConfig(any(
                    &xt::DownstreamTlsContext {
                        common_tls_context: Some(common_tls(None, &["h2", "http/1.1"])),
                        require_client_certificate: Some(wkt::BoolValue { value: true }),
                        ..Default::default()
                    },
                ))),
            }),
            ..Default::default()
        },
    );
    let route = route_table("inbound|80", INBOUND_CLUSTER);
    let cluster = xcl::Cluster {
        name: INBOUND_CLUSTER.into(),
        cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(wkt::Duration {
            seconds: 10,
            nanos: 0,
        }),
        load_assignment: Some(cla(INBOUND_CLUSTER, backend)),
        ..Default::default()
    };
    node(&l, &route, &cluster, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_side_has_all_four_types_and_the_server_identity() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let res = client_side(a, b, "spiffe://cluster.local/ns/bench/sa/server");
        assert_eq!(res.len(), 4);
        let (name, any) = &res[&xcl::Cluster::type_url()][0];
        assert_eq!(name, OUTBOUND_CLUSTER);
        let cluster = xcl::Cluster::decode(any.value.as_slice()).unwrap();
        let tls = cluster.transport_socket.unwrap();
        let Some(xc::transport_socket::ConfigType::TypedConfig(tls)) = tls.config_type else {
            panic!("typed config expected")
        };
        let tls = xt::UpstreamTlsContext::decode(tls.value.as_slice()).unwrap();
        assert!(format!("{tls:?}").contains("spiffe://cluster.local/ns/bench/sa/server"));
        let server = server_side(b, a);
        assert_eq!(server.len(), 3, "static inbound cluster: no EDS");
    }
}
