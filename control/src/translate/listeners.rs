//! LDS: `virtualOutbound` (15001, one chain per VIP:port) and
//! `virtualInbound` (15006, one chain per workload port) for captured
//! proxies; for explicit-mode proxies (`INTERCEPTION_MODE=NONE`) one HTTP
//! proxy listener on `127.0.0.1:<MESH_OUTBOUND_PORT>` routing by `Host`, and
//! `explicitInbound` on `<ip>:<MESH_INBOUND_PORT>` terminating mTLS for the
//! workload's one port.

use std::collections::BTreeMap;

use mesh_model::naming::{
    self, BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, VIRTUAL_INBOUND_LISTENER,
    VIRTUAL_OUTBOUND_LISTENER,
};
use mesh_model::networking::OutboundTrafficMode;
use mesh_proto::envoy::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use mesh_proto::envoy::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use mesh_proto::envoy::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use mesh_proto::envoy::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use mesh_proto::envoy::pb::envoy::extensions::filters::http::router::v3::Router;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use mesh_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy,
};
use mesh_proto::envoy::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use mesh_model::security::MtlsMode;
use mesh_proto::envoy::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, common_tls_context,
};

use super::clusters::socket_address;
use super::routes::EXPLICIT_ROUTE_CONFIG;
use super::{Context, Generated, ads_source, pack};
use crate::node::{ExplicitInbound, Interception};
use crate::registry::Protocol;

/// Port of the outbound capture listener.
pub const OUTBOUND_PORT: u32 = 15001;
/// Port of the inbound capture listener.
pub const INBOUND_PORT: u32 = 15006;
/// Name of the explicit-mode HTTP proxy listener.
pub const EXPLICIT_LISTENER: &str = "explicitOutbound";
/// Name of the explicit-mode inbound listener.
pub const EXPLICIT_INBOUND_LISTENER: &str = "explicitInbound";

/// Every listener of a proxy.
pub fn listeners(ctx: &Context<'_>) -> BTreeMap<String, Generated> {
    let mut out = BTreeMap::new();
    match ctx.proxy.interception {
        Interception::None => {
            if let Some(port) = ctx.proxy.outbound_port {
                let l = Listener {
                    name: EXPLICIT_LISTENER.into(),
                    address: Some(socket_address("127.0.0.1", port)),
                    traffic_direction: TrafficDirection::Outbound as i32,
                    filter_chains: vec![FilterChain {
                        name: EXPLICIT_LISTENER.into(),
                        filters: vec![hcm_rds(EXPLICIT_LISTENER, EXPLICIT_ROUTE_CONFIG)],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                out.insert(l.name.clone(), pack(&l));
            }
            if let Some(ei) = ctx.proxy.explicit_inbound() {
                let l = explicit_inbound(ctx, &ei);
                out.insert(l.name.clone(), pack(&l));
            }
        }
        Interception::Redirect | Interception::Tproxy => {
            let tproxy = ctx.proxy.interception == Interception::Tproxy;
            let o = outbound(ctx, tproxy);
            out.insert(o.name.clone(), pack(&o));
            let i = inbound(ctx, tproxy);
            out.insert(i.name.clone(), pack(&i));
        }
    }
    out
}

fn typed(name: &str, any: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any)),
    }
}

fn listener_filters() -> Vec<ListenerFilter> {
    let mut v = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        pack(&OriginalDst::default()).any,
    )];
    v.extend(inspectors());
    v
}

fn listener_filter(name: &str, any: Any) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// The TLS and HTTP inspectors (an Envoy needs the TLS one to match
/// `transport_protocol`).
fn inspectors() -> Vec<ListenerFilter> {
    [
        (
            "envoy.filters.listener.tls_inspector",
            pack(&TlsInspector::default()).any,
        ),
        (
            "envoy.filters.listener.http_inspector",
            pack(&HttpInspector::default()).any,
        ),
    ]
    .into_iter()
    .map(|(name, any)| listener_filter(name, any))
    .collect()
}

fn http_filters() -> Vec<HttpFilter> {
    vec![
        HttpFilter {
            name: "envoy.filters.http.fault".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                pack(&HttpFault::default()).any,
            )),
            ..Default::default()
        },
        HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                pack(&Router::default()).any,
            )),
            ..Default::default()
        },
    ]
}

fn hcm(stat_prefix: &str, routes: http_connection_manager::RouteSpecifier) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(routes),
        http_filters: http_filters(),
        ..Default::default()
    };
    typed(
        "envoy.filters.network.http_connection_manager",
        pack(&hcm).any,
    )
}

fn hcm_rds(stat_prefix: &str, route_config: &str) -> Filter {
    hcm(
        stat_prefix,
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.into(),
        }),
    )
}

fn tcp(stat_prefix: &str, cluster: &str) -> Filter {
    let t = TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    typed("envoy.filters.network.tcp_proxy", pack(&t).any)
}

/// The outbound HTTP chains: one per port (`0.0.0.0_<port>`, as Istio
/// names it) matching every VIP with an HTTP service on that port, with one
/// HCM on RDS route `<port>`, whose virtual hosts tell the services apart
/// by host name and by `VIP:port`. One chain and HCM per service would
/// repeat the same HCM a thousand times in a large mesh; the VIP prefixes
/// keep other destinations on the port on the default (passthrough) chain.
fn http_outbound_chains(ctx: &Context<'_>) -> Vec<FilterChain> {
    let mut ports: BTreeMap<u32, std::collections::BTreeSet<std::net::Ipv4Addr>> = BTreeMap::new();
    for s in &ctx.services {
        for p in s.ports.iter().filter(|p| p.protocol.is_http()) {
            ports.entry(p.number).or_default().insert(s.vip);
        }
    }
    ports
        .into_iter()
        .map(|(port, vips)| {
            let name = format!("0.0.0.0_{port}");
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    prefix_ranges: vips
                        .into_iter()
                        .map(|vip| CidrRange {
                            address_prefix: vip.to_string(),
                            prefix_len: Some(UInt32Value { value: 32 }),
                        })
                        .collect(),
                    destination_port: Some(UInt32Value { value: port }),
                    ..Default::default()
                }),
                filters: vec![hcm_rds(
                    &format!("outbound_{name}"),
                    &naming::route_config_name(port),
                )],
                name,
                ..Default::default()
            }
        })
        .collect()
}

fn outbound(ctx: &Context<'_>, tproxy: bool) -> Listener {
    let mut chains = http_outbound_chains(ctx);
    for s in &ctx.services {
        for p in &s.ports {
            let name = format!("outbound|{}||{}", p.number, s.host);
            if !p.protocol.is_http() {
                // tcp/tls routes: translate/l4.rs.
                chains.extend(super::l4::outbound_chains(ctx, s, p, &name));
                continue;
            }
        }
    }
    chains.extend(super::l4::sni_only_chains(ctx));
    let registry_only = ctx.snapshot.config.iter().any(|r| match r {
        mesh_model::Resource::Sidecar(sc) => {
            r.namespace() == ctx.proxy.namespace
                && sc
                    .spec
                    .outbound_traffic_policy
                    .as_ref()
                    .and_then(|p| p.mode)
                    == Some(OutboundTrafficMode::RegistryOnly)
        }
        _ => false,
    });
    let fallback = if registry_only {
        BLACKHOLE_CLUSTER
    } else {
        PASSTHROUGH_CLUSTER
    };
    Listener {
        name: VIRTUAL_OUTBOUND_LISTENER.into(),
        address: Some(socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        transparent: tproxy.then_some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters: listener_filters(),
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            name: fallback.into(),
            filters: vec![tcp(fallback, fallback)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The server side of mesh mTLS: the proxy's SVID (`default`), peers
/// verified against the trust bundle (`ROOTCA`), a client certificate
/// required. Like the upstream side, secrets are referenced by name only:
/// an Envoy gets them from its bootstrap, mesh-proxy from its CA client.
/// A TCP chain of a proxy that runs the TCP metadata exchange also accepts
/// `istio-peer-exchange` (Istio's inbound TCP chains list it first).
fn istio_mutual_server(peer_exchange: bool) -> TransportSocket {
    let mut alpn_protocols = vec!["h2".to_owned(), "http/1.1".to_owned()];
    if peer_exchange {
        alpn_protocols.insert(0, "istio-peer-exchange".to_owned());
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".into(),
                ..Default::default()
            }],
            alpn_protocols,
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                    SdsSecretConfig {
                        name: "ROOTCA".into(),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&ctx).any)),
    }
}

/// The filter chains of one inbound port for its PeerAuthentication mode:
/// STRICT accepts only TLS (plain text falls to the default chain, which
/// drops it), PERMISSIVE a TLS and a plain-text twin told apart by the TLS
/// inspector, DISABLE only plain text. `port` is the destination port to
/// match (none on a listener that serves one port). `peer_exchange`: the
/// TLS chain of a TCP port accepts the TCP metadata exchange.
fn inbound_chains(
    name: &str,
    port: Option<u32>,
    filter: Filter,
    mode: MtlsMode,
    peer_exchange: bool,
) -> Vec<FilterChain> {
    let peer_exchange = peer_exchange && filter.name == "envoy.filters.network.tcp_proxy";
    let chain = |transport: Option<&str>, tls: bool| FilterChain {
        name: name.to_string(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|value| UInt32Value { value }),
            transport_protocol: transport.unwrap_or_default().to_string(),
            ..Default::default()
        }),
        filters: vec![filter.clone()],
        transport_socket: tls.then(|| istio_mutual_server(peer_exchange)),
        ..Default::default()
    };
    match mode {
        MtlsMode::Strict => vec![chain(Some("tls"), true)],
        MtlsMode::Disable => vec![chain(None, false)],
        MtlsMode::Permissive | MtlsMode::Unset => {
            vec![chain(Some("tls"), true), chain(Some("raw_buffer"), false)]
        }
    }
}

/// The network filter of inbound port `port`: an HCM with an inline route
/// to `inbound|<port>||` for HTTP, else a TCP proxy to it.
fn inbound_filter(proto: &str, port: u32) -> Filter {
    let name = naming::inbound_cluster_name(port);
    if Protocol::detect(None, Some(proto)).is_http() {
        let rc = RouteConfiguration {
            name: name.clone(),
            virtual_hosts: vec![VirtualHost {
                name: name.clone(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            name.clone(),
                        )),
                        timeout: Some(Default::default()),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        hcm(
            &name,
            http_connection_manager::RouteSpecifier::RouteConfig(rc),
        )
    } else {
        tcp(&name, &name)
    }
}

/// The default inbound chain: anything no chain takes is dropped.
fn blackhole_chain() -> FilterChain {
    FilterChain {
        name: BLACKHOLE_CLUSTER.into(),
        filters: vec![tcp(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
        ..Default::default()
    }
}

/// `explicitInbound`: the chains of `virtualInbound` for the workload's one
/// port, on the sidecar's own address and port, without original dst.
fn explicit_inbound(ctx: &Context<'_>, ei: &ExplicitInbound) -> Listener {
    let name = naming::inbound_cluster_name(ei.port);
    let mode = super::peer_auth::inbound_mode(&ctx.snapshot.config, ctx.proxy, ei.port);
    Listener {
        name: EXPLICIT_INBOUND_LISTENER.into(),
        address: Some(socket_address(ctx.proxy.primary_ip(), ei.inbound_port)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: inspectors(),
        filter_chains: inbound_chains(
            &name,
            None,
            inbound_filter(&ei.protocol, ei.port),
            mode,
            ctx.proxy.peer_exchange,
        ),
        default_filter_chain: Some(blackhole_chain()),
        ..Default::default()
    }
}

fn inbound(ctx: &Context<'_>, tproxy: bool) -> Listener {
    let mut chains = Vec::new();
    for (proto, port) in &ctx.proxy.service_ports {
        let name = naming::inbound_cluster_name(*port);
        let filter = inbound_filter(proto, *port);
        let mode = super::peer_auth::inbound_mode(&ctx.snapshot.config, ctx.proxy, *port);
        chains.extend(inbound_chains(
            &name,
            Some(*port),
            filter,
            mode,
            ctx.proxy.peer_exchange,
        ));
    }
    Listener {
        name: VIRTUAL_INBOUND_LISTENER.into(),
        address: Some(socket_address("0.0.0.0", INBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        transparent: tproxy.then_some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: listener_filters(),
        filter_chains: chains,
        default_filter_chain: Some(blackhole_chain()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{LISTENER_TYPE, generate};
    use super::*;
    use prost::Message;

    const YAML: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec: {hosts: [backend], ports: [{number: 80, name: http}, {number: 5432, name: tcp-db}]}
";

    #[tokio::test]
    async fn http_services_share_one_outbound_chain_per_port_matching_their_vips() {
        let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [a], ports: [{number: 80, name: http}, {number: 8080, name: http-alt}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: [b], ports: [{number: 80, name: http}]}
";
        let snap = snapshot(yaml).await;
        let cfg = generate(&snap, &proxy());
        let out =
            Listener::decode(cfg[LISTENER_TYPE]["virtualOutbound"].any.value.as_slice()).unwrap();
        let vip = |h: &str| {
            snap.services
                .values()
                .find(|s| s.host.starts_with(h))
                .unwrap()
                .vip
                .to_string()
        };
        let chain = |port: u32| {
            let c = out
                .filter_chains
                .iter()
                .find(|c| c.name == format!("0.0.0.0_{port}"))
                .unwrap();
            let m = c.filter_chain_match.clone().unwrap();
            let mut vips: Vec<String> = m
                .prefix_ranges
                .iter()
                .map(|r| r.address_prefix.clone())
                .collect();
            vips.sort();
            assert!(
                m.prefix_ranges
                    .iter()
                    .all(|r| r.prefix_len == Some(UInt32Value { value: 32 }))
            );
            assert_eq!(m.destination_port, Some(UInt32Value { value: port }));
            assert_eq!(c.filters.len(), 1);
            let hcm = match &c.filters[0].config_type {
                Some(filter::ConfigType::TypedConfig(any)) => {
                    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
                }
                _ => panic!("typed HCM"),
            };
            let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier
            else {
                panic!("RDS");
            };
            assert_eq!(rds.route_config_name, port.to_string());
            vips
        };
        let mut both = vec![vip("a."), vip("b.")];
        both.sort();
        assert_eq!(chain(80), both);
        assert_eq!(chain(8080), vec![vip("a.")]);
        assert_eq!(out.filter_chains.len(), 2, "one chain per HTTP port");
        // The route configurations tell the services apart by VIP:port.
        let rc =
            RouteConfiguration::decode(cfg[super::super::ROUTE_TYPE]["80"].any.value.as_slice())
                .unwrap();
        for h in ["a.", "b."] {
            let d = format!("{}:80", vip(h));
            assert_eq!(
                rc.virtual_hosts
                    .iter()
                    .filter(|v| v.domains.contains(&d))
                    .count(),
                1,
                "{d}"
            );
        }
    }

    #[tokio::test]
    async fn captured_proxy_gets_outbound_chain_per_vip_port_and_inbound_per_workload_port() {
        let snap = snapshot(YAML).await;
        let mut p = proxy();
        p.service_ports = vec![("http".into(), 9080)];
        let cfg = generate(&snap, &p);
        let out =
            Listener::decode(cfg[LISTENER_TYPE]["virtualOutbound"].any.value.as_slice()).unwrap();
        assert_eq!(out.filter_chains.len(), 2);
        let vip = snap.services.values().next().unwrap().vip.to_string();
        let m = out.filter_chains[0].filter_chain_match.as_ref().unwrap();
        assert_eq!(m.prefix_ranges[0].address_prefix, vip);
        assert_eq!(
            out.filter_chains[1].filters[0].name,
            "envoy.filters.network.tcp_proxy"
        );
        let inb =
            Listener::decode(cfg[LISTENER_TYPE]["virtualInbound"].any.value.as_slice()).unwrap();
        assert_eq!(inb.filter_chains[0].name, "inbound|9080||");
    }

    #[tokio::test]
    async fn peer_authentication_shapes_the_inbound_chains() {
        let inbound_chains = |yaml: &'static str| async move {
            let snap = snapshot(yaml).await;
            let mut p = proxy();
            p.service_ports = vec![("http".into(), 9080)];
            let cfg = generate(&snap, &p);
            Listener::decode(cfg[LISTENER_TYPE]["virtualInbound"].any.value.as_slice())
                .unwrap()
                .filter_chains
        };
        let transports = |chains: &[FilterChain]| {
            chains
                .iter()
                .map(|c| {
                    let m = c.filter_chain_match.as_ref().unwrap();
                    (m.transport_protocol.clone(), c.transport_socket.is_some())
                })
                .collect::<Vec<_>>()
        };
        // No policy: PERMISSIVE, a TLS chain and a plain-text twin.
        let chains = inbound_chains(YAML).await;
        assert_eq!(
            transports(&chains),
            [("tls".to_string(), true), ("raw_buffer".to_string(), false)]
        );
        let strict = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";
        let chains = inbound_chains(strict).await;
        assert_eq!(transports(&chains), [("tls".to_string(), true)]);
        let ts = chains[0].transport_socket.as_ref().unwrap();
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("typed config expected")
        };
        let tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            tls.require_client_certificate,
            Some(BoolValue { value: true })
        );
        let common = tls.common_tls_context.unwrap();
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
        let disable = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
";
        assert_eq!(
            transports(&inbound_chains(disable).await),
            [(String::new(), false)]
        );
    }

    #[tokio::test]
    async fn inbound_tcp_chains_of_a_mesh_proxy_accept_the_tcp_metadata_exchange() {
        let snap = snapshot(YAML).await;
        let alpn_of = |p: &crate::node::ProxyNode| {
            let cfg = generate(&snap, p);
            let chains =
                Listener::decode(cfg[LISTENER_TYPE]["virtualInbound"].any.value.as_slice())
                    .unwrap()
                    .filter_chains;
            chains
                .iter()
                .filter_map(|c| {
                    let Some(transport_socket::ConfigType::TypedConfig(any)) =
                        &c.transport_socket.as_ref()?.config_type
                    else {
                        return None;
                    };
                    let tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
                    Some((c.name.clone(), tls.common_tls_context?.alpn_protocols))
                })
                .collect::<Vec<_>>()
        };
        let mut p = proxy();
        p.service_ports = vec![("http".into(), 9080), ("tcp".into(), 3306)];
        assert_eq!(
            alpn_of(&p),
            [
                (
                    "inbound|9080||".to_string(),
                    vec!["h2".to_string(), "http/1.1".into()]
                ),
                (
                    "inbound|3306||".to_string(),
                    vec![
                        "istio-peer-exchange".to_string(),
                        "h2".into(),
                        "http/1.1".into()
                    ]
                ),
            ]
        );
        // An Envoy (no exchange filter) never accepts it.
        p.peer_exchange = false;
        assert!(
            alpn_of(&p)
                .iter()
                .all(|(_, alpn)| alpn == &["h2", "http/1.1"])
        );
    }

    fn explicit_server() -> crate::node::ProxyNode {
        let mut p = proxy();
        p.interception = Interception::None;
        p.outbound_port = Some(18080);
        p.inbound_port = Some(18006);
        p.app_port = Some(18001);
        p.ips = vec!["127.0.0.1".into()];
        p.service_ports = vec![("http".into(), 9080)];
        p
    }

    #[tokio::test]
    async fn explicit_server_gets_an_inbound_listener_on_its_own_port_terminating_mtls() {
        let snap = snapshot(YAML).await;
        let cfg = generate(&snap, &explicit_server());
        assert_eq!(cfg[LISTENER_TYPE].len(), 2);
        let l = Listener::decode(
            cfg[LISTENER_TYPE][EXPLICIT_INBOUND_LISTENER]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        let addr = format!("{:?}", l.address);
        assert!(
            addr.contains("127.0.0.1") && addr.contains("18006"),
            "{addr}"
        );
        assert_eq!(l.traffic_direction, TrafficDirection::Inbound as i32);
        assert_eq!(l.use_original_dst, None);
        assert!(
            l.listener_filters
                .iter()
                .all(|f| f.name != "envoy.filters.listener.original_dst")
        );
        // PERMISSIVE by default: a TLS chain and its plain-text twin, with
        // no destination port (the listener serves one port).
        let chains: Vec<_> = l
            .filter_chains
            .iter()
            .map(|c| {
                let m = c.filter_chain_match.as_ref().unwrap();
                assert_eq!(m.destination_port, None);
                (
                    c.name.as_str(),
                    m.transport_protocol.as_str(),
                    c.transport_socket.is_some(),
                )
            })
            .collect();
        assert_eq!(
            chains,
            [
                ("inbound|9080||", "tls", true),
                ("inbound|9080||", "raw_buffer", false)
            ]
        );
        assert_eq!(
            l.default_filter_chain.as_ref().map(|c| c.name.as_str()),
            Some(BLACKHOLE_CLUSTER)
        );
        // The inbound cluster points at the app's own port.
        let c = mesh_proto::envoy::pb::envoy::config::cluster::v3::Cluster::decode(
            cfg[super::super::CLUSTER_TYPE]["inbound|9080||"]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        let ep = format!("{:?}", c.load_assignment);
        assert!(ep.contains("127.0.0.1") && ep.contains("18001"), "{ep}");
    }

    #[tokio::test]
    async fn explicit_server_under_strict_accepts_only_tls() {
        let strict = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";
        let snap = snapshot(strict).await;
        let cfg = generate(&snap, &explicit_server());
        let l = Listener::decode(
            cfg[LISTENER_TYPE][EXPLICIT_INBOUND_LISTENER]
                .any
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!(l.filter_chains.len(), 1);
        let m = l.filter_chains[0].filter_chain_match.as_ref().unwrap();
        assert_eq!(m.transport_protocol, "tls");
        assert!(l.filter_chains[0].transport_socket.is_some());
    }

    #[tokio::test]
    async fn explicit_client_without_inbound_port_gets_no_inbound_listener_or_cluster() {
        let snap = snapshot(YAML).await;
        let mut p = explicit_server();
        p.inbound_port = None;
        let cfg = generate(&snap, &p);
        assert_eq!(
            cfg[LISTENER_TYPE].keys().collect::<Vec<_>>(),
            [EXPLICIT_LISTENER]
        );
        assert!(!cfg[super::super::CLUSTER_TYPE].contains_key("inbound|9080||"));
    }

    #[tokio::test]
    async fn explicit_proxy_gets_one_loopback_listener() {
        let snap = snapshot(YAML).await;
        let mut p = proxy();
        p.interception = Interception::None;
        p.outbound_port = Some(18080);
        let cfg = generate(&snap, &p);
        assert_eq!(cfg[LISTENER_TYPE].len(), 1);
        let l =
            Listener::decode(cfg[LISTENER_TYPE][EXPLICIT_LISTENER].any.value.as_slice()).unwrap();
        let addr = format!("{:?}", l.address);
        assert!(
            addr.contains("127.0.0.1") && addr.contains("18080"),
            "{addr}"
        );
    }
}
