//! Listeners (LDS): address, listener filters, filter chains and their
//! network filters (HTTP connection manager, TCP proxy).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::http_inspector::v3 as xhi;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::original_dst::v3 as xod;
use mesh_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3 as xti;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3 as xtcp;
use serde::Serialize;

use super::action::{ClusterTarget, WeightedTarget};
use super::check::{decode_any, opt_duration, reject_set};
use super::endpoint::socket_address;
use super::headers::HeaderMutation;
use super::http::{HttpConnectionManager, hcm};
use super::tls::{self, DownstreamTls};
use super::{ConfigError, Ctx};

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// A listener filter (they only enable what the proxy does anyway, but the
/// proxy records which ones were asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ListenerFilter {
    /// `envoy.filters.listener.original_dst`.
    OriginalDst,
    /// `envoy.filters.listener.tls_inspector`.
    TlsInspector,
    /// `envoy.filters.listener.http_inspector`.
    HttpInspector,
}

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Transport protocol a filter chain accepts (from TLS inspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TransportProtocol {
    /// A TLS ClientHello was seen.
    Tls,
    /// Anything else.
    RawBuffer,
}

/// Which connections a filter chain takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterChainMatch {
    /// Original destination port.
    pub destination_port: Option<u16>,
    /// Original destination IP prefixes (any of).
    pub prefix_ranges: Vec<Cidr>,
    /// Transport protocol.
    pub transport_protocol: Option<TransportProtocol>,
    /// ALPN values (any of).
    pub application_protocols: Vec<String>,
    /// SNI values (any of).
    pub server_names: Vec<String>,
}

/// A TCP proxy.
#[derive(Debug, Clone, Serialize)]
pub struct TcpProxy {
    /// Stats prefix.
    pub stat_prefix: String,
    /// Upstream cluster(s).
    pub target: ClusterTarget,
    /// Idle timeout (Envoy default 1 h; zero disables).
    pub idle_timeout: Option<Duration>,
}

/// The terminal network filter of a chain.
#[derive(Debug, Clone, Serialize)]
pub enum NetworkFilter {
    /// HTTP.
    Http(HttpConnectionManager),
    /// Opaque TCP.
    Tcp(TcpProxy),
}

/// A filter chain.
#[derive(Debug, Clone, Serialize)]
pub struct FilterChain {
    /// Name, e.g. `outbound|9080||reviews.default.svc.cluster.local`.
    pub name: String,
    /// Selection criteria.
    pub matcher: FilterChainMatch,
    /// TLS termination, if any.
    pub tls: Option<DownstreamTls>,
    /// What handles the connection.
    pub filter: NetworkFilter,
}

/// A listener.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// Name, e.g. `virtualOutbound`.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// Pick chains by the connection's original destination.
    pub use_original_dst: bool,
    /// Listener filters asked for.
    pub listener_filters: Vec<ListenerFilter>,
    /// How long protocol sniffing may wait for the client's first bytes.
    pub sniff_timeout: Option<Duration>,
    /// Filter chains.
    pub filter_chains: Vec<FilterChain>,
    /// Chain used when none matches.
    pub default_filter_chain: Option<FilterChain>,
    /// Inbound traffic (`traffic_direction: INBOUND`, or the listener named
    /// `virtualInbound`): metrics report as `destination`.
    pub inbound: bool,
}

impl TryFrom<xl::Listener> for Listener {
    type Error = ConfigError;

    fn try_from(l: xl::Listener) -> Result<Self, ConfigError> {
        let ctx = Ctx::new("Listener", &l.name);
        let xl::Listener {
            name,
            address,
            additional_addresses,
            stat_prefix,
            stats_matcher,
            filter_chains,
            fcds_config,
            filter_chain_matcher,
            use_original_dst,
            default_filter_chain,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            metadata: _informational,
            deprecated_v1,
            drain_type,
            listener_filters,
            listener_filters_timeout,
            continue_on_listener_filters_timeout,
            transparent,
            freebind,
            socket_options,
            tcp_fast_open_queue_length,
            traffic_direction,
            udp_listener_config,
            api_listener,
            connection_balance_config,
            reuse_port,
            enable_reuse_port,
            access_log,
            tcp_backlog_size,
            max_connections_to_accept_per_socket_event,
            bind_to_port,
            enable_mptcp,
            ignore_global_conn_limit,
            bypass_overload_manager,
            tcp_keepalive,
            listener_specifier,
        } = l;
        reject_set!(ctx; additional_addresses, stat_prefix, stats_matcher, fcds_config, filter_chain_matcher,
            per_connection_buffer_limit_bytes, per_connection_buffer_high_watermark_timeout, deprecated_v1,
            drain_type, transparent, freebind, socket_options, tcp_fast_open_queue_length, udp_listener_config,
            api_listener, connection_balance_config, reuse_port, enable_reuse_port, access_log, tcp_backlog_size,
            max_connections_to_accept_per_socket_event, bind_to_port, enable_mptcp, ignore_global_conn_limit,
            bypass_overload_manager, tcp_keepalive, listener_specifier);
        // Protocol sniffing always falls back to TCP when the client stays
        // silent, which is what `continue_on_listener_filters_timeout: true` asks.
        let _ = continue_on_listener_filters_timeout;
        let address = socket_address(&ctx.at("address"), address)?;
        let listener_filters = listener_filters
            .into_iter()
            .enumerate()
            .map(|(i, f)| listener_filter(&ctx.idx("listener_filters", i), f))
            .collect::<Result<_, _>>()?;
        let filter_chains: Vec<FilterChain> = filter_chains
            .into_iter()
            .enumerate()
            .map(|(i, fc)| filter_chain(&ctx.idx("filter_chains", i), fc))
            .collect::<Result<_, _>>()?;
        let default_filter_chain = default_filter_chain
            .map(|fc| filter_chain(&ctx.at("default_filter_chain"), fc))
            .transpose()?;
        if filter_chains.is_empty() && default_filter_chain.is_none() {
            return Err(ctx.missing("filter_chains"));
        }
        let inbound =
            traffic_direction == xc::TrafficDirection::Inbound as i32 || name == "virtualInbound";
        Ok(Listener {
            inbound,
            name,
            address,
            use_original_dst: use_original_dst.is_some_and(|b| b.value),
            listener_filters,
            sniff_timeout: opt_duration(
                &ctx,
                "listener_filters_timeout",
                listener_filters_timeout.as_ref(),
            )?,
            filter_chains,
            default_filter_chain,
        })
    }
}

fn listener_filter(ctx: &Ctx, f: xl::ListenerFilter) -> Result<ListenerFilter, ConfigError> {
    let xl::ListenerFilter {
        name,
        filter_disabled,
        config_type,
    } = f;
    reject_set!(ctx; filter_disabled);
    let any = match config_type {
        Some(xl::listener_filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(xl::listener_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported("config_discovery"));
        }
        None => None,
    };
    let kind = match name.as_str() {
        "envoy.filters.listener.original_dst" => {
            if let Some(any) = any {
                let xod::OriginalDst {} = decode_any(ctx, "typed_config", &any)?;
            }
            ListenerFilter::OriginalDst
        }
        "envoy.filters.listener.tls_inspector" => {
            if let Some(any) = any {
                let ti: xti::TlsInspector = decode_any(ctx, "typed_config", &any)?;
                let ctx = ctx.at("typed_config");
                let xti::TlsInspector {
                    enable_ja3_fingerprinting,
                    enable_ja4_fingerprinting,
                    initial_read_buffer_size,
                    close_connection_on_client_hello_parsing_errors,
                    max_client_hello_size,
                } = ti;
                reject_set!(ctx; enable_ja3_fingerprinting, enable_ja4_fingerprinting, initial_read_buffer_size,
                    close_connection_on_client_hello_parsing_errors, max_client_hello_size);
            }
            ListenerFilter::TlsInspector
        }
        "envoy.filters.listener.http_inspector" => {
            if let Some(any) = any {
                let xhi::HttpInspector {} = decode_any(ctx, "typed_config", &any)?;
            }
            ListenerFilter::HttpInspector
        }
        other => return Err(ctx.invalid("name", format!("unsupported listener filter {other:?}"))),
    };
    Ok(kind)
}

fn filter_chain(ctx: &Ctx, fc: xl::FilterChain) -> Result<FilterChain, ConfigError> {
    let xl::FilterChain {
        filter_chain_match,
        filters,
        use_proxy_proto,
        metadata: _informational,
        transport_socket,
        transport_socket_connect_timeout,
        name,
    } = fc;
    reject_set!(ctx; use_proxy_proto, transport_socket_connect_timeout);
    let matcher = filter_chain_match
        .map(|m| chain_match(&ctx.at("filter_chain_match"), m))
        .transpose()?
        .unwrap_or_default();
    let tls = transport_socket
        .map(|ts| tls::downstream(&ctx.at("transport_socket"), ts))
        .transpose()?;
    if filters.len() != 1 {
        return Err(ctx.invalid(
            "filters",
            format!("exactly one network filter (http_connection_manager or tcp_proxy) is supported, got {}", filters.len()),
        ));
    }
    let mut filter = None;
    for (i, f) in filters.into_iter().enumerate() {
        filter = Some(network_filter(&ctx.idx("filters", i), f)?);
    }
    let filter = filter.ok_or_else(|| ctx.missing("filters"))?;
    Ok(FilterChain {
        name,
        matcher,
        tls,
        filter,
    })
}

fn chain_match(ctx: &Ctx, m: xl::FilterChainMatch) -> Result<FilterChainMatch, ConfigError> {
    let xl::FilterChainMatch {
        destination_port,
        prefix_ranges,
        address_suffix,
        suffix_len,
        direct_source_prefix_ranges,
        source_type,
        source_prefix_ranges,
        source_ports,
        server_names,
        transport_protocol,
        application_protocols,
    } = m;
    reject_set!(ctx; address_suffix, suffix_len, direct_source_prefix_ranges, source_type, source_prefix_ranges, source_ports);
    let destination_port = destination_port
        .map(|p| {
            u16::try_from(p.value).map_err(|_| {
                ctx.invalid("destination_port", format!("{} is out of range", p.value))
            })
        })
        .transpose()?;
    let prefix_ranges = prefix_ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| cidr(&ctx.idx("prefix_ranges", i), r))
        .collect::<Result<_, _>>()?;
    let transport_protocol = match transport_protocol.as_str() {
        "" => None,
        "tls" => Some(TransportProtocol::Tls),
        "raw_buffer" => Some(TransportProtocol::RawBuffer),
        other => {
            return Err(ctx.invalid(
                "transport_protocol",
                format!("{other:?} is not tls or raw_buffer"),
            ));
        }
    };
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges,
        transport_protocol,
        application_protocols,
        // SNI is compared case-insensitively: keep the names lowercase.
        server_names: server_names
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
    })
}

pub(crate) fn cidr(ctx: &Ctx, r: xc::CidrRange) -> Result<Cidr, ConfigError> {
    let xc::CidrRange {
        address_prefix,
        prefix_len,
    } = r;
    let addr: IpAddr = address_prefix.parse().map_err(|_| {
        ctx.invalid(
            "address_prefix",
            format!("{address_prefix:?} is not an IP address"),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = prefix_len.map_or(0, |p| p.value);
    if len > max {
        return Err(ctx.invalid("prefix_len", format!("{len} is longer than {max}")));
    }
    // len <= 128 was just checked.
    Ok(Cidr {
        addr,
        len: len as u8,
    })
}

fn network_filter(ctx: &Ctx, f: xl::Filter) -> Result<NetworkFilter, ConfigError> {
    let xl::Filter { name, config_type } = f;
    let any = match config_type {
        Some(xl::filter::ConfigType::TypedConfig(any)) => any,
        Some(xl::filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported("config_discovery"));
        }
        None => return Err(ctx.missing("typed_config")),
    };
    match name.as_str() {
        HCM_FILTER => Ok(NetworkFilter::Http(hcm(ctx, &any)?)),
        TCP_PROXY_FILTER => Ok(NetworkFilter::Tcp(tcp_proxy(
            ctx,
            decode_any(ctx, "typed_config", &any)?,
        )?)),
        other => Err(ctx.invalid("name", format!("unsupported network filter {other:?}"))),
    }
}

fn tcp_proxy(ctx: &Ctx, t: xtcp::TcpProxy) -> Result<TcpProxy, ConfigError> {
    use xtcp::tcp_proxy::ClusterSpecifier as C;
    let ctx = ctx.at("typed_config");
    let xtcp::TcpProxy {
        stat_prefix,
        on_demand,
        metadata_match,
        idle_timeout,
        downstream_idle_timeout,
        upstream_idle_timeout,
        access_log,
        max_connect_attempts,
        backoff_options,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage,
        access_log_flush_interval,
        flush_access_log_on_connected,
        access_log_options,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy,
        upstream_connect_mode,
        max_early_data_bytes,
        check_drain_close,
        cluster_specifier,
    } = t;
    reject_set!(ctx; on_demand, metadata_match, downstream_idle_timeout, upstream_idle_timeout, access_log,
        max_connect_attempts, backoff_options, hash_policy, tunneling_config, max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage, access_log_flush_interval,
        flush_access_log_on_connected, access_log_options, proxy_protocol_tlvs, proxy_protocol_tlv_merge_policy,
        upstream_connect_mode, max_early_data_bytes, check_drain_close);
    let target = match cluster_specifier {
        Some(C::Cluster(c)) => ClusterTarget::Single(c),
        Some(C::WeightedClusters(w)) => {
            let wctx = ctx.at("weighted_clusters");
            let xtcp::tcp_proxy::WeightedCluster { clusters } = w;
            let mut out = Vec::new();
            for (i, cw) in clusters.into_iter().enumerate() {
                let cctx = wctx.idx("clusters", i);
                let xtcp::tcp_proxy::weighted_cluster::ClusterWeight {
                    name,
                    weight,
                    metadata_match,
                } = cw;
                reject_set!(cctx; metadata_match);
                out.push(WeightedTarget {
                    cluster: name,
                    weight,
                    headers: HeaderMutation::default(),
                });
            }
            if out.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
                return Err(wctx.invalid("clusters", "weights must add up to more than 0"));
            }
            ClusterTarget::Weighted(out)
        }
        None => return Err(ctx.missing("cluster")),
    };
    Ok(TcpProxy {
        stat_prefix,
        target,
        idle_timeout: opt_duration(&ctx, "idle_timeout", idle_timeout.as_ref())?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::endpoint::tests::sock;
    use crate::config::http::tests::{any, rds_hcm};
    use mesh_proto::envoy::pb::google::protobuf as wkt;

    pub(crate) fn tcp_filter(cluster: &str) -> xl::Filter {
        xl::Filter {
            name: TCP_PROXY_FILTER.into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(any(&xtcp::TcpProxy {
                stat_prefix: cluster.into(),
                cluster_specifier: Some(xtcp::tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
                ..Default::default()
            }))),
        }
    }

    pub(crate) fn http_filter(route: &str) -> xl::Filter {
        xl::Filter {
            name: HCM_FILTER.into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(any(&rds_hcm(route)))),
        }
    }

    pub(crate) fn chain(
        name: &str,
        vip: Option<&str>,
        port: Option<u32>,
        filter: xl::Filter,
    ) -> xl::FilterChain {
        xl::FilterChain {
            name: name.into(),
            filter_chain_match: Some(xl::FilterChainMatch {
                destination_port: port.map(|value| wkt::UInt32Value { value }),
                prefix_ranges: vip
                    .map(|v| xc::CidrRange {
                        address_prefix: v.into(),
                        prefix_len: Some(wkt::UInt32Value { value: 32 }),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            filters: vec![filter],
            ..Default::default()
        }
    }

    pub(crate) fn virtual_outbound(
        chains: Vec<xl::FilterChain>,
        default: xl::FilterChain,
    ) -> xl::Listener {
        xl::Listener {
            name: "virtualOutbound".into(),
            address: Some(sock("0.0.0.0", 15001)),
            use_original_dst: Some(wkt::BoolValue { value: true }),
            listener_filters: vec![
                xl::ListenerFilter {
                    name: "envoy.filters.listener.original_dst".into(),
                    config_type: Some(xl::listener_filter::ConfigType::TypedConfig(any(
                        &xod::OriginalDst {},
                    ))),
                    filter_disabled: None,
                },
                xl::ListenerFilter {
                    name: "envoy.filters.listener.tls_inspector".into(),
                    config_type: Some(xl::listener_filter::ConfigType::TypedConfig(any(
                        &xti::TlsInspector::default(),
                    ))),
                    filter_disabled: None,
                },
            ],
            filter_chains: chains,
            default_filter_chain: Some(default),
            traffic_direction: xc::TrafficDirection::Outbound as i32,
            ..Default::default()
        }
    }

    #[test]
    fn virtual_outbound_listener_converts() {
        let l = Listener::try_from(virtual_outbound(
            vec![
                chain(
                    "outbound|9080||reviews",
                    Some("10.96.0.10"),
                    Some(9080),
                    http_filter("9080"),
                ),
                chain(
                    "outbound|3306||db",
                    Some("10.96.0.11"),
                    Some(3306),
                    tcp_filter("outbound|3306||db"),
                ),
            ],
            chain(
                "PassthroughFilterChain",
                None,
                None,
                tcp_filter("PassthroughCluster"),
            ),
        ))
        .unwrap();
        assert_eq!(l.address, "0.0.0.0:15001".parse().unwrap());
        assert!(l.use_original_dst);
        assert_eq!(
            l.listener_filters,
            [ListenerFilter::OriginalDst, ListenerFilter::TlsInspector]
        );
        assert_eq!(l.filter_chains[0].matcher.destination_port, Some(9080));
        assert!(
            l.filter_chains[0].matcher.prefix_ranges[0].contains("10.96.0.10".parse().unwrap())
        );
        assert!(
            !l.filter_chains[0].matcher.prefix_ranges[0].contains("10.96.0.11".parse().unwrap())
        );
        assert!(matches!(l.filter_chains[1].filter, NetworkFilter::Tcp(_)));
        assert!(l.default_filter_chain.is_some());
    }

    #[test]
    fn unknown_network_filter_is_rejected_by_name() {
        let mut f = tcp_filter("x");
        f.name = "envoy.filters.network.redis_proxy".into();
        let err = Listener::try_from(virtual_outbound(
            vec![chain("c", None, Some(1), f)],
            chain("d", None, None, tcp_filter("x")),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Listener virtualOutbound: invalid filter_chains[0].filters[0].name: unsupported network filter \"envoy.filters.network.redis_proxy\""
        );
    }

    #[test]
    fn source_prefix_match_is_rejected_by_name() {
        let mut c = chain("c", None, Some(1), tcp_filter("x"));
        c.filter_chain_match.as_mut().unwrap().source_ports.push(1);
        let err = Listener::try_from(virtual_outbound(
            vec![c],
            chain("d", None, None, tcp_filter("x")),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Listener virtualOutbound: unsupported field filter_chains[0].filter_chain_match.source_ports"
        );
    }

    #[test]
    fn cidr_contains_respects_prefix_length() {
        let c = Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            len: 8,
        };
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let any = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        };
        assert!(any.contains("192.168.1.1".parse().unwrap()));
    }
}
