//! The `BootstrapConfigDump`: the bootstrap the proxy runs with, in Envoy's
//! `Bootstrap` form, so `meshctl proxy-config bootstrap --admin` and
//! istioctl read it as they read Envoy's.
//!
//! It holds the node exactly as the xDS client sends it to meshd, the
//! `xds-grpc` cluster (meshd's address, TLS with the workload SVID when the
//! address is `https://`), ADS for CDS and LDS, the admin address, and the
//! health, Prometheus and merged-metrics ports as static listeners without
//! filters (they are served by the proxy itself, not by Envoy filters).

use std::net::SocketAddr;
use std::time::SystemTime;

use mesh_proto::envoy::pb::envoy::admin::v3::BootstrapConfigDump;
use mesh_proto::envoy::pb::envoy::config::bootstrap::v3::{
    Admin, Bootstrap,
    bootstrap::{DynamicResources, StaticResources},
};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use mesh_proto::envoy::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    SocketAddress, TransportSocket, address, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, grpc_service, socket_address::PortSpecifier,
    transport_socket,
};
use mesh_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use mesh_proto::envoy::pb::envoy::config::listener::v3::Listener;
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, SdsSecretConfig, UpstreamTlsContext, common_tls_context,
};

use super::{pack, timestamp};
use crate::agent::AgentConfig;
use crate::xds::XdsMode;

/// The static cluster carrying the xDS stream, named as in Istio's bootstrap.
pub const XDS_CLUSTER: &str = "xds-grpc";

/// The name the proxy verifies in meshd's serving certificate (see
/// `XdsClientConfig::svid`).
const XDS_SERVER_NAME: &str = "mesh-ca";

/// The bootstrap facts of a running proxy, fixed at start.
#[derive(Debug, Clone)]
pub struct BootstrapDump {
    /// The Envoy `Bootstrap` describing them.
    pub bootstrap: Bootstrap,
    /// When the proxy started.
    pub started: SystemTime,
}

impl BootstrapDump {
    /// The bootstrap of a proxy started now with `cfg`.
    pub fn of(cfg: &AgentConfig) -> Self {
        Self {
            bootstrap: bootstrap(cfg),
            started: SystemTime::now(),
        }
    }

    /// The admin `BootstrapConfigDump`.
    pub fn config_dump(&self) -> BootstrapConfigDump {
        BootstrapConfigDump {
            bootstrap: Some(self.bootstrap.clone()),
            last_updated: timestamp(self.started),
        }
    }
}

fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

fn socket_of(a: SocketAddr) -> Address {
    socket(&a.ip().to_string(), a.port())
}

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        resource_api_version: ApiVersion::V3.into(),
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    })
}

/// Host, port and TLS of an xDS URL like `https://meshd:15012` (the port
/// defaults to the scheme's).
fn xds_target(url: &str) -> (String, u16, bool) {
    let tls = url.starts_with("https://");
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => (v6, None),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(default_port);
    (host.to_owned(), port, tls)
}

/// TLS to meshd with the workload SVID (`default`) against the mesh roots
/// (`ROOTCA`), the names the secrets dump uses.
fn xds_tls() -> TransportSocket {
    let tls = UpstreamTlsContext {
        sni: XDS_SERVER_NAME.to_owned(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".to_owned(),
                ..Default::default()
            }],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                    SdsSecretConfig {
                        name: "ROOTCA".to_owned(),
                        ..Default::default()
                    },
                ),
            ),
            alpn_protocols: vec!["h2".to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&tls))),
    }
}

fn xds_cluster(url: &str) -> Cluster {
    let (host, port, tls) = xds_target(url);
    let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
        DiscoveryType::Static
    } else {
        DiscoveryType::StrictDns
    };
    Cluster {
        name: XDS_CLUSTER.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery.into())),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: XDS_CLUSTER.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&host, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        transport_socket: tls.then(xds_tls),
        ..Default::default()
    }
}

fn port_listener(name: &str, address: SocketAddr) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket_of(address)),
        ..Default::default()
    }
}

/// The Envoy `Bootstrap` equivalent of `cfg`.
pub fn bootstrap(cfg: &AgentConfig) -> Bootstrap {
    let api_type = match cfg.xds.mode {
        XdsMode::Delta => ApiType::DeltaGrpc,
        XdsMode::Sotw => ApiType::Grpc,
    };
    Bootstrap {
        node: Some(cfg.xds.node.to_node()),
        static_resources: Some(StaticResources {
            listeners: vec![
                port_listener("health", cfg.health),
                port_listener("prometheus", cfg.prometheus),
                port_listener("status", cfg.status),
            ],
            clusters: vec![xds_cluster(&cfg.xds.address)],
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            lds_config: ads(),
            cds_config: ads(),
            ads_config: Some(ApiConfigSource {
                api_type: api_type.into(),
                transport_api_version: ApiVersion::V3.into(),
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: XDS_CLUSTER.to_owned(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                set_node_on_first_message_only: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket_of(cfg.admin)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xds_urls_split_into_host_port_and_tls() {
        assert_eq!(
            xds_target("http://127.0.0.1:15010"),
            ("127.0.0.1".into(), 15010, false)
        );
        assert_eq!(
            xds_target("https://meshd.mesh-system.svc:15012/"),
            ("meshd.mesh-system.svc".into(), 15012, true)
        );
        assert_eq!(
            xds_target("https://[::1]:15012"),
            ("::1".into(), 15012, true)
        );
        assert_eq!(xds_target("http://meshd"), ("meshd".into(), 80, false));
    }

    #[test]
    fn xds_cluster_uses_tls_only_for_https() {
        let plain = xds_cluster("http://127.0.0.1:15010");
        assert!(plain.transport_socket.is_none());
        assert_eq!(
            plain.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static.into()))
        );
        let tls = xds_cluster("https://meshd:15012");
        assert_eq!(
            tls.transport_socket.map(|t| t.name).as_deref(),
            Some("envoy.transport_sockets.tls")
        );
        assert_eq!(
            tls.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns.into()))
        );
    }
}

#[cfg(test)]
mod dump_tests {
    use super::*;
    use crate::config::ProxyConfig;
    use crate::config_dump::{DumpQuery, render};
    use crate::xds::NodeIdentity;

    #[test]
    fn bootstrap_dump_comes_first_with_the_node_of_the_flags() {
        let node = NodeIdentity {
            id: "sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local".into(),
            namespace: "default".into(),
            service_account: "reviews".into(),
            labels: [("version".to_owned(), "v2".to_owned())].into(),
            locality: "eu/zone-b".into(),
            service_name: "reviews".into(),
            ..Default::default()
        };
        let mut cfg = AgentConfig::new("https://meshd:15012", node, XdsMode::Sotw);
        cfg.admin.set_port(15999);
        let b = BootstrapDump::of(&cfg);
        let text = render(
            &ProxyConfig::default(),
            None,
            Some(&b),
            &DumpQuery::default(),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &json["configs"][0];
        assert_eq!(
            first["@type"],
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
        );
        let node = &first["bootstrap"]["node"];
        assert_eq!(
            node["id"],
            "sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local"
        );
        assert_eq!(node["metadata"]["LABELS"]["version"], "v2");
        assert_eq!(node["metadata"]["NAMESPACE"], "default");
        assert_eq!(node["locality"]["region"], "eu");
        assert_eq!(node["user_agent_name"], "mesh-proxy");
        let boot = &first["bootstrap"];
        assert_eq!(
            boot["admin"]["address"]["socket_address"]["port_value"],
            15999
        );
        assert_eq!(boot["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let tls = &boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "mesh-ca");
        assert_eq!(
            tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"],
            "default"
        );
        // No key material in a bootstrap either.
        assert!(!text.contains("private_key"));
    }
}
