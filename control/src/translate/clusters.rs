//! CDS: `outbound|<port>|<subset>|<host>` per service port and subset (with
//! the DestinationRule's LB, pool, outlier and TLS), `inbound|<port>||` for
//! the proxy's own ports, `PassthroughCluster` and `BlackHoleCluster`.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_model::naming::{self, BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};
use mesh_model::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection as IstioOutlier, SimpleLb, TrafficPolicy,
};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
        MaglevLbConfig, RingHashLbConfig, common_lb_config::LocalityConfigSpecifier,
    },
};
use mesh_proto::envoy::pb::envoy::config::core::v3::{
    Address, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpOptions, SocketAddress,
    TcpKeepalive as CoreTcpKeepalive, TransportSocket, address, socket_address, transport_socket,
};
use mesh_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher::SanType,
};
use mesh_proto::envoy::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use mesh_proto::envoy::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::envoy::pb::envoy::r#type::v3::Percent;
use mesh_proto::envoy::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::endpoints::locality::LocalityMode;
use super::{Context, Generated, ads_source, istio_duration, pack, pb_duration};
use crate::node::Interception;
use crate::registry::{Protocol, Service, ServicePort};

/// Connect timeout when no DestinationRule sets one (Istio's default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// All clusters of a proxy, and the names of its EDS clusters.
pub fn clusters(ctx: &Context<'_>) -> (BTreeMap<String, Generated>, Vec<EdsCluster>) {
    let mut out = BTreeMap::new();
    let mut eds = Vec::new();
    for svc in &ctx.services {
        let dr = ctx.destination_rules.get(&svc.host);
        for port in &svc.ports {
            let top = dr.and_then(|d| d.spec.traffic_policy.as_ref());
            let mut variants = vec![(None, top, BTreeMap::new())];
            for subset in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                let policy = subset.traffic_policy.as_ref().or(top);
                variants.push((Some(subset.name.as_str()), policy, subset.labels.clone()));
            }
            for (subset, policy, labels) in variants {
                let name = naming::outbound_cluster_name(port.number, subset, &svc.host);
                let mut cluster =
                    outbound_cluster(&name, svc, port, subset, policy, ctx.proxy.peer_exchange);
                let locality = locality_mode(&cluster, port, policy);
                if locality.as_ref().is_some_and(LocalityMode::weighted) {
                    // `distribute`: the proxy picks a locality by weight first.
                    cluster
                        .common_lb_config
                        .get_or_insert_with(Default::default)
                        .locality_config_specifier = Some(
                        LocalityConfigSpecifier::LocalityWeightedLbConfig(Default::default()),
                    );
                }
                if super::dns::make_dns_cluster(ctx, svc, port, &labels, &mut cluster) {
                    // resolution: DNS: endpoints inline, resolved by the proxy.
                    out.insert(name, pack(&cluster));
                    continue;
                }
                out.insert(name.clone(), pack(&cluster));
                eds.push(EdsCluster {
                    name,
                    host: svc.host.clone(),
                    port: port.clone(),
                    labels,
                    locality,
                });
            }
        }
    }
    if ctx.proxy.interception != Interception::None {
        for (protocol, port) in &ctx.proxy.service_ports {
            let name = naming::inbound_cluster_name(*port);
            let protocol = Protocol::detect(Some(protocol), None);
            out.insert(name.clone(), pack(&inbound_cluster(&name, *port, protocol)));
        }
    } else if let Some(ei) = ctx.proxy.explicit_inbound() {
        // Explicit mode: the app listens on its own loopback port.
        let name = naming::inbound_cluster_name(ei.port);
        let protocol = Protocol::detect(Some(&ei.protocol), None);
        out.insert(
            name.clone(),
            pack(&inbound_cluster(&name, ei.app_port, protocol)),
        );
    }
    let passthrough = Cluster {
        name: PASSTHROUGH_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(pb_duration(DEFAULT_CONNECT_TIMEOUT)),
        ..Default::default()
    };
    out.insert(PASSTHROUGH_CLUSTER.into(), pack(&passthrough));
    let blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb_duration(DEFAULT_CONNECT_TIMEOUT)),
        ..Default::default()
    };
    out.insert(BLACKHOLE_CLUSTER.into(), pack(&blackhole));
    (out, eds)
}

/// An EDS cluster and how to pick its endpoints.
#[derive(Debug, Clone)]
pub struct EdsCluster {
    /// Cluster name.
    pub name: String,
    /// Service host.
    pub host: String,
    /// Service port.
    pub port: ServicePort,
    /// Subset labels (empty: every endpoint).
    pub labels: BTreeMap<String, String>,
    /// Locality-aware balancing of its endpoints, if any.
    pub locality: Option<LocalityMode>,
}

/// The load balancer settings in force for `port` (port-level first).
fn lb_settings<'a>(
    port: &ServicePort,
    policy: Option<&'a TrafficPolicy>,
) -> Option<&'a LoadBalancerSettings> {
    policy
        .and_then(|p| {
            p.port_level_settings
                .iter()
                .find(|s| s.port.as_ref().is_some_and(|x| x.number == port.number))
        })
        .and_then(|p| p.load_balancer.as_ref())
        .or(policy.and_then(|p| p.load_balancer.as_ref()))
}

/// The locality mode of an outbound cluster: failover needs the cluster's
/// outlier detection (Istio's rule).
fn locality_mode(
    cluster: &Cluster,
    port: &ServicePort,
    policy: Option<&TrafficPolicy>,
) -> Option<LocalityMode> {
    LocalityMode::of(
        lb_settings(port, policy),
        cluster.outlier_detection.is_some(),
    )
}

fn outbound_cluster(
    name: &str,
    svc: &Service,
    port: &ServicePort,
    subset: Option<&str>,
    policy: Option<&TrafficPolicy>,
    peer_exchange: bool,
) -> Cluster {
    // Port-level settings override the policy's own, field by field.
    let port_level = policy.and_then(|p| {
        p.port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|x| x.number == port.number))
    });
    let lb = port_level
        .and_then(|p| p.load_balancer.as_ref())
        .or(policy.and_then(|p| p.load_balancer.as_ref()));
    let pool = port_level
        .and_then(|p| p.connection_pool.as_ref())
        .or(policy.and_then(|p| p.connection_pool.as_ref()));
    let outlier = port_level
        .and_then(|p| p.outlier_detection.as_ref())
        .or(policy.and_then(|p| p.outlier_detection.as_ref()));
    let tls = port_level
        .and_then(|p| p.tls.as_ref())
        .or(policy.and_then(|p| p.tls.as_ref()));
    let connect_timeout = pool
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| istio_duration(t.connect_timeout.as_ref()))
        .unwrap_or(pb_duration(DEFAULT_CONNECT_TIMEOUT));
    let mut cluster = Cluster {
        name: name.to_string(),
        alt_stat_name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(connect_timeout),
        lb_policy: lb_policy(lb) as i32,
        circuit_breakers: pool.map(circuit_breakers),
        outlier_detection: outlier.map(outlier_detection),
        lb_config: lb.and_then(hash_lb_config),
        upstream_connection_options: pool
            .and_then(|p| p.tcp.as_ref())
            .and_then(|t| t.tcp_keepalive.as_ref())
            .map(|ka| UpstreamConnectionOptions {
                tcp_keepalive: Some(CoreTcpKeepalive {
                    keepalive_probes: ka.probes.map(|value| UInt32Value { value }),
                    keepalive_time: istio_duration(ka.time.as_ref()).map(|d| UInt32Value {
                        value: d.seconds.clamp(1, i64::from(u32::MAX)) as u32,
                    }),
                    keepalive_interval: istio_duration(ka.interval.as_ref()).map(|d| UInt32Value {
                        value: d.seconds.clamp(1, i64::from(u32::MAX)) as u32,
                    }),
                }),
                ..Default::default()
            }),
        // Istio: with outlier detection, panic starts below
        // minHealthPercent (default 0: never).
        common_lb_config: outlier.map(|o| CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: f64::from(o.min_health_percent.unwrap_or(0).clamp(0, 100)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let upstream = upstream_protocol(pool, port.protocol);
    if let Some(o) = http_options(pool, upstream) {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_OPTIONS.into(), pack(&o).any);
    }
    let alpn = Alpn {
        http2: upstream == UpstreamHttp::Http2,
        peer_exchange,
    };
    cluster.transport_socket = transport_socket(svc, port, subset, tls, alpn);
    cluster
}

fn lb_policy(lb: Option<&LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        return if ch.maglev.is_some() {
            LbPolicy::Maglev
        } else {
            LbPolicy::RingHash
        };
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::Passthrough) => LbPolicy::ClusterProvided,
        _ => LbPolicy::LeastRequest,
    }
}

/// Ring size or Maglev table size of a consistent-hash policy.
fn hash_lb_config(lb: &LoadBalancerSettings) -> Option<LbConfig> {
    let ch = lb.consistent_hash.as_ref()?;
    if let Some(m) = &ch.maglev {
        return Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: m.table_size.map(|value| UInt64Value { value }),
        }));
    }
    let ring = ch
        .ring_hash
        .as_ref()
        .and_then(|r| r.minimum_ring_size)
        .or(ch.minimum_ring_size);
    Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: ring.map(|value| UInt64Value { value }),
        ..Default::default()
    }))
}

fn u32v(v: Option<i32>) -> Option<UInt32Value> {
    v.filter(|v| *v > 0)
        .map(|v| UInt32Value { value: v as u32 })
}

fn circuit_breakers(pool: &ConnectionPoolSettings) -> CircuitBreakers {
    let tcp = pool.tcp.as_ref();
    let http = pool.http.as_ref();
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: u32v(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: u32v(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: u32v(http.and_then(|h| h.http2_max_requests)),
            max_retries: u32v(http.and_then(|h| h.max_retries)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn outlier_detection(o: &IstioOutlier) -> OutlierDetection {
    let consecutive_5xx = o
        .consecutive_5xx_errors
        .or(o.consecutive_errors.map(|v| v.max(0) as u32));
    OutlierDetection {
        consecutive_5xx: consecutive_5xx.map(|v| UInt32Value { value: v }),
        enforcing_consecutive_5xx: Some(UInt32Value {
            value: if consecutive_5xx.is_some_and(|v| v > 0) {
                100
            } else {
                0
            },
        }),
        consecutive_gateway_failure: o
            .consecutive_gateway_errors
            .map(|v| UInt32Value { value: v }),
        enforcing_consecutive_gateway_failure: o
            .consecutive_gateway_errors
            .map(|_| UInt32Value { value: 100 }),
        interval: istio_duration(o.interval.as_ref()),
        base_ejection_time: istio_duration(o.base_ejection_time.as_ref()),
        max_ejection_percent: u32v(o.max_ejection_percent),
        ..Default::default()
    }
}

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// ALPN of an Istio-mutual cluster (Istio's `ALPNInMeshWithMxc`): the
/// `istio` value marks in-mesh traffic, `istio-peer-exchange` offers the
/// TCP metadata exchange.
const ALPN_IN_MESH: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ALPN of an Istio-mutual HTTP/2 cluster (Istio's `ALPNInMeshH2WithMxc`).
const ALPN_IN_MESH_H2: [&str; 3] = ["istio-peer-exchange", "istio", "h2"];
/// The same for a proxy without the metadata exchange (an Envoy: Istio's
/// `ALPNInMesh` / `ALPNInMeshH2`).
const ALPN_IN_MESH_NO_MX: [&str; 1] = ["istio"];
const ALPN_IN_MESH_H2_NO_MX: [&str; 2] = ["istio", "h2"];

/// What decides an Istio-mutual cluster's ALPN list.
#[derive(Debug, Clone, Copy)]
struct Alpn {
    /// The cluster speaks HTTP/2 upstream.
    http2: bool,
    /// The proxy runs the TCP metadata exchange.
    peer_exchange: bool,
}

/// The HTTP version a cluster speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamHttp {
    /// HTTP/1.1 (Envoy's default; no explicit config needed).
    Http1,
    /// HTTP/2 (`explicit_http_config.http2_protocol_options`).
    Http2,
    /// The downstream request's version (`use_downstream_protocol_config`).
    Downstream,
}

/// Istio's rules for an outbound cluster: HTTP/2 ports (`http2`, `grpc`,
/// `grpc-web`) always speak h2; `useClientProtocol` follows the client;
/// otherwise the DestinationRule's `h2UpgradePolicy` decides for HTTP
/// ports (`UPGRADE`: h2, `DO_NOT_UPGRADE`/`DEFAULT`: the mesh default,
/// which is Istio's `DO_NOT_UPGRADE`; meshd does not read a mesh-wide
/// `h2UpgradePolicy` yet). Istio would also mark a TCP port's cluster h2 on
/// `UPGRADE`; meshd does not, as no HTTP crosses it.
fn upstream_protocol(pool: Option<&ConnectionPoolSettings>, protocol: Protocol) -> UpstreamHttp {
    let http = pool.and_then(|p| p.http.as_ref());
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        return UpstreamHttp::Downstream;
    }
    match protocol {
        Protocol::Http2 => UpstreamHttp::Http2,
        Protocol::Http => match http.and_then(|h| h.h2_upgrade_policy) {
            Some(H2UpgradePolicy::Upgrade) => UpstreamHttp::Http2,
            Some(H2UpgradePolicy::DoNotUpgrade | H2UpgradePolicy::Default) | None => {
                UpstreamHttp::Http1
            }
        },
        Protocol::Tcp => UpstreamHttp::Http1,
    }
}

fn http_options(
    pool: Option<&ConnectionPoolSettings>,
    upstream: UpstreamHttp,
) -> Option<HttpProtocolOptions> {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let http = pool.and_then(|p| p.http.as_ref());
    let idle = http.and_then(|h| istio_duration(h.idle_timeout.as_ref()));
    let max_req = u32v(http.and_then(|h| h.max_requests_per_connection));
    let max_duration = pool
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| istio_duration(t.max_connection_duration.as_ref()));
    if idle.is_none()
        && max_req.is_none()
        && max_duration.is_none()
        && upstream == UpstreamHttp::Http1
    {
        return None;
    }
    let h2 = || Http2ProtocolOptions {
        max_concurrent_streams: u32v(http.and_then(|h| h.max_concurrent_streams)),
        ..Default::default()
    };
    let upstream_protocol_options = match upstream {
        UpstreamHttp::Downstream => {
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http2_protocol_options: Some(h2()),
                    ..Default::default()
                },
            )
        }
        UpstreamHttp::Http2 => http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2())),
            },
        ),
        UpstreamHttp::Http1 => http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Default::default())),
            },
        ),
    };
    let common =
        (idle.is_some() || max_req.is_some() || max_duration.is_some()).then(|| CoreHttpOptions {
            idle_timeout: idle,
            max_requests_per_connection: max_req,
            max_connection_duration: max_duration,
            ..Default::default()
        });
    Some(HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(upstream_protocol_options),
        ..Default::default()
    })
}

/// mTLS when the DestinationRule asks for ISTIO_MUTUAL, or by default when
/// every endpoint runs a sidecar (Istio's auto mTLS); none for DISABLE,
/// external services and plain workloads.
fn transport_socket(
    svc: &Service,
    port: &ServicePort,
    subset: Option<&str>,
    tls: Option<&ClientTlsSettings>,
    alpn: Alpn,
) -> Option<TransportSocket> {
    let mode = tls.and_then(|t| t.mode);
    let auto =
        !svc.external && !svc.endpoints.is_empty() && svc.endpoints.iter().all(|e| e.is_mesh());
    let ctx = match mode {
        Some(ClientTlsMode::IstioMutual) => istio_mutual(svc, port, subset, alpn),
        Some(ClientTlsMode::Simple) => UpstreamTlsContext {
            sni: tls
                .and_then(|t| t.sni.clone())
                .unwrap_or_else(|| svc.host.clone()),
            ..Default::default()
        },
        Some(ClientTlsMode::Disable) => return None,
        _ if auto => istio_mutual(svc, port, subset, alpn),
        _ => return None,
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&ctx).any)),
    })
}

/// Istio's `ISTIO_MUTUAL` client context; an HTTP/2 cluster also offers
/// `h2`, which the peer sidecar's inbound chain (`h2`, `http/1.1`) selects.
fn istio_mutual(
    svc: &Service,
    port: &ServicePort,
    subset: Option<&str>,
    alpn: Alpn,
) -> UpstreamTlsContext {
    let alpn: &[&str] = match (alpn.http2, alpn.peer_exchange) {
        (true, true) => &ALPN_IN_MESH_H2,
        (false, true) => &ALPN_IN_MESH,
        (true, false) => &ALPN_IN_MESH_H2_NO_MX,
        (false, false) => &ALPN_IN_MESH_NO_MX,
    };
    let mut accounts: Vec<String> = svc
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                e.namespace,
                e.service_account.as_deref().unwrap_or("default")
            )
        })
        .collect();
    accounts.sort();
    accounts.dedup();
    let sans = accounts
        .into_iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".into(),
                ..Default::default()
            }],
            alpn_protocols: alpn.iter().map(|a| (*a).to_string()).collect(),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(SdsSecretConfig {
                            name: "ROOTCA".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        sni: naming::sni_for_cluster(port.number, subset, &svc.host),
        ..Default::default()
    }
}

/// The cluster to the app's own port: HTTP/1.1 unless the port is an
/// HTTP/2 one (`grpc`, `http2`), whatever the peer sidecar spoke.
fn inbound_cluster(name: &str, port: u32, protocol: Protocol) -> Cluster {
    let mut cluster = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb_duration(DEFAULT_CONNECT_TIMEOUT)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address("127.0.0.1", port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let upstream = match protocol {
        Protocol::Http2 => UpstreamHttp::Http2,
        Protocol::Http | Protocol::Tcp => UpstreamHttp::Http1,
    };
    if let Some(o) = http_options(None, upstream) {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_OPTIONS.into(), pack(&o).any);
    }
    cluster
}

/// A TCP socket address.
pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{CLUSTER_TYPE, generate};
    use super::*;
    use prost::Message;

    const YAML: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 7, connectTimeout: 2s}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}, tls: {mode: ISTIO_MUTUAL}}}
";

    fn cluster(cfg: &super::super::ProxyConfig, name: &str) -> Cluster {
        Cluster::decode(cfg[CLUSTER_TYPE][name].any.value.as_slice()).unwrap()
    }

    #[tokio::test]
    async fn destination_rule_shapes_clusters_and_subsets() {
        let snap = snapshot(YAML).await;
        let cfg = generate(&snap, &proxy());
        let host = "backend.default.svc.cluster.local";
        let all = cluster(&cfg, &format!("outbound|80||{host}"));
        assert_eq!(all.lb_policy, LbPolicy::RoundRobin as i32);
        assert_eq!(all.connect_timeout.unwrap().seconds, 2);
        assert_eq!(
            all.circuit_breakers.unwrap().thresholds[0]
                .max_connections
                .unwrap()
                .value,
            7
        );
        assert_eq!(
            all.outlier_detection
                .unwrap()
                .consecutive_5xx
                .unwrap()
                .value,
            3
        );
        assert!(all.transport_socket.is_none(), "plain endpoints: no mTLS");
        let v2 = cluster(&cfg, &format!("outbound|80|v2|{host}"));
        assert_eq!(v2.lb_policy, LbPolicy::Random as i32);
        assert!(v2.transport_socket.is_some(), "ISTIO_MUTUAL asked for");
        assert!(cfg[CLUSTER_TYPE].contains_key(&format!("outbound|80|v1|{host}")));
        assert!(cfg[CLUSTER_TYPE].contains_key("PassthroughCluster"));
        assert!(cfg[CLUSTER_TYPE].contains_key("BlackHoleCluster"));
    }

    const HASHED: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}
    outlierDetection: {consecutive5xxErrors: 2, minHealthPercent: 40}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1009}}}}}
";

    #[tokio::test]
    async fn consistent_hash_and_min_health_percent_become_lb_config_and_panic_threshold() {
        let snap = snapshot(HASHED).await;
        let cfg = generate(&snap, &proxy());
        let host = "backend.default.svc.cluster.local";
        let all = cluster(&cfg, &format!("outbound|80||{host}"));
        assert_eq!(all.lb_policy, LbPolicy::RingHash as i32);
        let Some(LbConfig::RingHashLbConfig(ring)) = all.lb_config else {
            panic!("ring hash config expected: {:?}", all.lb_config)
        };
        assert_eq!(ring.minimum_ring_size.unwrap().value, 2048);
        let panic = all
            .common_lb_config
            .unwrap()
            .healthy_panic_threshold
            .unwrap();
        assert_eq!(panic.value, 40.0);
        let v1 = cluster(&cfg, &format!("outbound|80|v1|{host}"));
        assert_eq!(v1.lb_policy, LbPolicy::Maglev as i32);
        let Some(LbConfig::MaglevLbConfig(m)) = v1.lb_config else {
            panic!("maglev config expected")
        };
        assert_eq!(m.table_size.unwrap().value, 1009);
        // No outlier detection on the subset's own policy: no panic setting.
        assert!(v1.common_lb_config.is_none());
    }

    #[tokio::test]
    async fn tcp_keepalive_and_max_connection_duration_reach_the_cluster() {
        let yaml = HASHED.replace(
            "outlierDetection: {consecutive5xxErrors: 2, minHealthPercent: 40}",
            "connectionPool: {tcp: {maxConnectionDuration: 1h, tcpKeepalive: {time: 30s, interval: 5s, probes: 4}}}",
        );
        let snap = snapshot(&yaml).await;
        let cfg = generate(&snap, &proxy());
        let all = cluster(&cfg, "outbound|80||backend.default.svc.cluster.local");
        let ka = all
            .upstream_connection_options
            .unwrap()
            .tcp_keepalive
            .unwrap();
        assert_eq!(ka.keepalive_time.unwrap().value, 30);
        assert_eq!(ka.keepalive_interval.unwrap().value, 5);
        assert_eq!(ka.keepalive_probes.unwrap().value, 4);
        let any = &all.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let opts = HttpProtocolOptions::decode(any.value.as_slice()).unwrap();
        let d = opts
            .common_http_protocol_options
            .unwrap()
            .max_connection_duration
            .unwrap();
        assert_eq!(d.seconds, 3600);
    }

    fn protocol_options(c: &Cluster) -> Option<HttpProtocolOptions> {
        c.typed_extension_protocol_options
            .get(HTTP_OPTIONS)
            .map(|any| HttpProtocolOptions::decode(any.value.as_slice()).unwrap())
    }

    fn h2_streams(c: &Cluster) -> Option<Option<u32>> {
        use http_protocol_options::explicit_http_config::ProtocolConfig;
        match protocol_options(c)?.upstream_protocol_options? {
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e) => {
                match e.protocol_config? {
                    ProtocolConfig::Http2ProtocolOptions(o) => {
                        Some(o.max_concurrent_streams.map(|v| v.value))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn alpn(c: &Cluster) -> Vec<String> {
        let Some(transport_socket::ConfigType::TypedConfig(any)) =
            &c.transport_socket.as_ref().unwrap().config_type
        else {
            panic!("typed TLS config expected")
        };
        UpstreamTlsContext::decode(any.value.as_slice())
            .unwrap()
            .common_tls_context
            .unwrap()
            .alpn_protocols
    }

    const H2: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}, {number: 90, name: http-legacy}, {number: 9090, name: grpc}, {number: 3306, name: tcp}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 50, http2MaxRequests: 10}}
    portLevelSettings:
    - port: {number: 90}
      connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, connectionPool: {http: {useClientProtocol: true}}}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
";

    #[tokio::test]
    async fn an_envoy_is_not_offered_the_tcp_metadata_exchange() {
        // An Envoy has no exchange filter from meshd: `istio-peer-exchange`
        // would let a mesh-proxy server send it a preamble its app sees.
        let snap = snapshot(H2).await;
        let envoy = crate::node::ProxyNode {
            peer_exchange: false,
            ..proxy()
        };
        let cfg = generate(&snap, &envoy);
        let host = "backend.default.svc.cluster.local";
        assert_eq!(
            alpn(&cluster(&cfg, &format!("outbound|80||{host}"))),
            ["istio", "h2"]
        );
        assert_eq!(
            alpn(&cluster(&cfg, &format!("outbound|3306||{host}"))),
            ["istio"]
        );
    }

    #[tokio::test]
    async fn h2_upgrade_policy_makes_http_clusters_speak_h2_and_offer_h2_alpn() {
        let snap = snapshot(H2).await;
        let cfg = generate(&snap, &proxy());
        let host = "backend.default.svc.cluster.local";
        let upgraded = cluster(&cfg, &format!("outbound|80||{host}"));
        assert_eq!(
            h2_streams(&upgraded),
            Some(Some(50)),
            "UPGRADE: h2 with maxConcurrentStreams"
        );
        assert_eq!(alpn(&upgraded), ["istio-peer-exchange", "istio", "h2"]);
        assert_eq!(
            upgraded.circuit_breakers.unwrap().thresholds[0]
                .max_requests
                .unwrap()
                .value,
            10,
            "http2MaxRequests is the max_requests breaker"
        );
        // The port-level DO_NOT_UPGRADE wins over the policy's UPGRADE.
        let legacy = cluster(&cfg, &format!("outbound|90||{host}"));
        assert_eq!(h2_streams(&legacy), None);
        assert_eq!(alpn(&legacy), ["istio-peer-exchange", "istio"]);
        // No HTTP crosses a TCP port: it is never upgraded.
        let tcp = cluster(&cfg, &format!("outbound|3306||{host}"));
        assert_eq!(h2_streams(&tcp), None);
        assert_eq!(alpn(&tcp), ["istio-peer-exchange", "istio"]);
        // useClientProtocol follows the downstream request's version.
        let v1 = cluster(&cfg, &format!("outbound|80|v1|{host}"));
        assert!(matches!(
            protocol_options(&v1).unwrap().upstream_protocol_options,
            Some(http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
        assert_eq!(alpn(&v1), ["istio-peer-exchange", "istio"]);
        // A subset policy without connectionPool: the default, HTTP/1.1.
        let v2 = cluster(&cfg, &format!("outbound|80|v2|{host}"));
        assert!(protocol_options(&v2).is_none());
    }

    #[tokio::test]
    async fn grpc_ports_always_speak_h2_and_http_ports_do_not_by_default() {
        let yaml = H2.replace(
            "connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 50, http2MaxRequests: 10}}",
            "connectionPool: {http: {h2UpgradePolicy: DEFAULT}}",
        );
        let snap = snapshot(&yaml).await;
        let cfg = generate(&snap, &proxy());
        let host = "backend.default.svc.cluster.local";
        let grpc = cluster(&cfg, &format!("outbound|9090||{host}"));
        assert_eq!(h2_streams(&grpc), Some(None));
        assert_eq!(alpn(&grpc), ["istio-peer-exchange", "istio", "h2"]);
        let http = cluster(&cfg, &format!("outbound|80||{host}"));
        assert_eq!(
            h2_streams(&http),
            None,
            "DEFAULT is the mesh default: no upgrade"
        );
        assert!(protocol_options(&http).is_none());
    }

    #[test]
    fn inbound_clusters_speak_the_apps_protocol() {
        let http = inbound_cluster("inbound|9080||", 9080, Protocol::Http);
        assert!(protocol_options(&http).is_none(), "HTTP/1.1 to the app");
        let grpc = inbound_cluster("inbound|9090||", 9090, Protocol::Http2);
        assert_eq!(h2_streams(&grpc), Some(None));
    }

    #[tokio::test]
    async fn distribute_makes_the_cluster_locality_weighted() {
        let yaml = YAML.replace(
            "loadBalancer: {simple: ROUND_ROBIN}",
            "loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {distribute: [{from: 'r1/*', to: {'r1/z1/*': 80, 'r1/z2/*': 20}}]}}",
        );
        let snap = snapshot(&yaml).await;
        let cfg = generate(&snap, &proxy());
        let host = "backend.default.svc.cluster.local";
        let all = cluster(&cfg, &format!("outbound|80||{host}"));
        let common = all.common_lb_config.unwrap();
        assert!(matches!(
            common.locality_config_specifier,
            Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ));
        assert_eq!(common.healthy_panic_threshold.unwrap().value, 0.0);
        // Failover alone (outlier detection, no distribute) sets priorities
        // only: no locality weighting.
        let plain_snap = snapshot(YAML).await;
        let plain = cluster(
            &generate(&plain_snap, &proxy()),
            &format!("outbound|80||{host}"),
        );
        assert!(
            plain
                .common_lb_config
                .unwrap()
                .locality_config_specifier
                .is_none()
        );
        // The v2 subset's own policy has no localityLbSetting.
        let v2 = cluster(&cfg, &format!("outbound|80|v2|{host}"));
        assert!(
            v2.common_lb_config
                .is_none_or(|c| c.locality_config_specifier.is_none())
        );
    }
}
