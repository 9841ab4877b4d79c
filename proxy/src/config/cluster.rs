//! Clusters (CDS): discovery type, load-balancing policy, timeouts,
//! circuit breakers, outlier detection, HTTP protocol options and TLS.

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::extensions::upstreams::http::v3 as xh;
use serde::Serialize;

use super::check::{decode_any, duration, opt_duration, reject_set};
use super::endpoint::{LoadAssignment, inline_assignment};
use super::tls::{self, UpstreamTls};
use super::{ConfigError, Ctx};

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, Serialize)]
pub enum Discovery {
    /// From EDS, under this service name (the cluster name unless
    /// `eds_cluster_config.service_name` says otherwise).
    Eds {
        /// Name of the `ClusterLoadAssignment` to use.
        service_name: String,
    },
    /// Fixed endpoints from the cluster's `load_assignment`.
    Static(Arc<LoadAssignment>),
    /// The connection's original destination (PassthroughCluster).
    OriginalDst,
    /// Hosts resolved by DNS (`STRICT_DNS`, `LOGICAL_DNS`; see `crate::dns`).
    Dns(Arc<crate::dns::DnsCluster>),
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Least request, power of two choices.
    LeastRequest,
    /// Uniform random.
    Random,
    /// Consistent hashing on a ring, keyed by the route's `hash_policy`
    /// (without a hash key the pick is random, as in Envoy).
    RingHash,
    /// Maglev consistent hashing, keyed like `RingHash`.
    Maglev,
    /// The cluster picks (ORIGINAL_DST clusters: the original destination).
    ClusterProvided,
}

/// Circuit breaker thresholds (default priority).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CircuitBreaker {
    /// Maximum connections to the cluster.
    pub max_connections: Option<u32>,
    /// Maximum requests waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Maximum concurrent requests.
    pub max_requests: Option<u32>,
    /// Maximum concurrent retries (Envoy's default 3; ignored when a retry
    /// budget is set).
    pub max_retries: Option<u32>,
    /// Concurrent retries as a share of active requests.
    pub retry_budget: Option<RetryBudget>,
}

/// Envoy's `retry_budget`: concurrent retries may be at most
/// `budget_percent` of the requests in flight, but never fewer than
/// `min_retry_concurrency`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Percent of active requests (default 20).
    pub budget_percent: f64,
    /// Floor on concurrent retries (default 3).
    pub min_retry_concurrency: u32,
}

impl Eq for RetryBudget {}

/// Outlier detection settings (consecutive errors ejection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (502/503/504) before ejection.
    pub consecutive_gateway_failure: Option<u32>,
    /// Percent chance a 5xx streak ejects.
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Percent chance a gateway error streak ejects.
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    /// How often ejections are evaluated.
    pub interval: Option<Duration>,
    /// Base ejection time.
    pub base_ejection_time: Option<Duration>,
    /// Upper bound on ejected hosts, in percent.
    pub max_ejection_percent: Option<u32>,
    /// Cap on one ejection (Envoy's default 300 s).
    pub max_ejection_time: Option<Duration>,
}

/// Which HTTP version the proxy speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Envoy's default).
    Http1,
    /// HTTP/2 (`explicit_http_config.http2_protocol_options`).
    Http2,
    /// Whatever the downstream request used.
    Downstream,
}

/// Upstream HTTP connection options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpOptions {
    /// Idle time before a pooled connection closes.
    pub idle_timeout: Option<Duration>,
    /// Requests per connection before it is retired.
    pub max_requests_per_connection: Option<u32>,
    /// Age after which a connection takes no new request.
    pub max_connection_duration: Option<Duration>,
    /// Protocol toward the upstream.
    pub protocol: UpstreamProtocol,
    /// Streams one HTTP/2 connection carries at once before the pool opens
    /// another (`http2_protocol_options.max_concurrent_streams`).
    pub max_concurrent_streams: Option<u32>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            idle_timeout: None,
            max_requests_per_connection: None,
            max_connection_duration: None,
            protocol: UpstreamProtocol::Http1,
            max_concurrent_streams: None,
        }
    }
}

/// An upstream cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// Istio-style name, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    /// Where endpoints come from.
    pub discovery: Discovery,
    /// How an endpoint is picked.
    pub lb_policy: LbPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Circuit breaker thresholds, if any.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Outlier detection, if any.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream HTTP options.
    pub http: HttpOptions,
    /// Mutual TLS origination, if any.
    pub tls: Option<UpstreamTls>,
    /// Below this percentage of usable (not ejected) endpoints the cluster
    /// is in panic and balances over all of them (Envoy's default 50; 0
    /// turns panic off). From `common_lb_config.healthy_panic_threshold`,
    /// where Istio puts the DestinationRule's `minHealthPercent`.
    pub healthy_panic_threshold: f64,
    /// TCP keepalive on upstream connections
    /// (`upstream_connection_options.tcp_keepalive`).
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `ring_hash_lb_config.minimum_ring_size` or `maglev_lb_config.table_size`.
    pub hash_table_size: Option<u64>,
    /// `common_lb_config.locality_weighted_lb_config` is set: pick a
    /// locality by its weight first, then an endpoint inside it.
    pub locality_weighted: bool,
}

/// TCP keepalive settings; unset values keep the kernel's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle seconds before the first probe.
    pub time: Option<u32>,
    /// Seconds between probes.
    pub interval: Option<u32>,
}

/// Envoy's default healthy panic threshold.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;

impl TryFrom<xcl::Cluster> for Cluster {
    type Error = ConfigError;

    fn try_from(c: xcl::Cluster) -> Result<Self, ConfigError> {
        let ctx = Ctx::new("Cluster", &c.name);
        let xcl::Cluster {
            transport_socket_matches,
            transport_socket_matcher,
            name,
            // Only names the cluster in stats.
            alt_stat_name: _stats_name,
            stats_matcher,
            eds_cluster_config,
            connect_timeout,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            lb_policy,
            load_assignment,
            health_checks,
            max_requests_per_connection,
            circuit_breakers,
            upstream_http_protocol_options,
            common_http_protocol_options,
            http_protocol_options,
            http2_protocol_options,
            mut typed_extension_protocol_options,
            dns_refresh_rate,
            dns_jitter,
            dns_failure_refresh_rate,
            respect_dns_ttl,
            dns_lookup_family,
            dns_resolvers,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            wait_for_warm_on_init,
            outlier_detection,
            cleanup_interval,
            upstream_bind_config,
            lb_subset_config,
            common_lb_config,
            transport_socket,
            metadata: _informational,
            protocol_selection,
            upstream_connection_options,
            close_connections_on_host_health_failure,
            ignore_health_on_host_removal,
            filters,
            load_balancing_policy,
            lrs_server,
            lrs_report_endpoint_metrics,
            track_timeout_budgets,
            upstream_config,
            track_cluster_stats,
            preconnect_policy,
            connection_pool_per_downstream_connection,
            queuing_policies,
            cluster_discovery_type,
            lb_config,
        } = c;
        reject_set!(ctx; transport_socket_matches, transport_socket_matcher, stats_matcher,
            per_connection_buffer_limit_bytes, per_connection_buffer_high_watermark_timeout, health_checks,
            max_requests_per_connection, upstream_http_protocol_options, common_http_protocol_options,
            http_protocol_options, http2_protocol_options, dns_jitter, dns_failure_refresh_rate, dns_resolvers,
            use_tcp_for_dns_lookups, dns_resolution_config,
            typed_dns_resolver_config, wait_for_warm_on_init, cleanup_interval, upstream_bind_config,
            lb_subset_config, protocol_selection,
            close_connections_on_host_health_failure, ignore_health_on_host_removal, filters,
            load_balancing_policy, lrs_server, lrs_report_endpoint_metrics, track_timeout_budgets,
            upstream_config, track_cluster_stats, preconnect_policy, connection_pool_per_downstream_connection,
            queuing_policies);

        use xcl::cluster::DiscoveryType as D;
        let kind = match cluster_discovery_type {
            Some(xcl::cluster::ClusterDiscoveryType::Type(t)) => {
                D::try_from(t).map_err(|_| ctx.invalid("type", format!("unknown value {t}")))?
            }
            Some(xcl::cluster::ClusterDiscoveryType::ClusterType(_)) => {
                return Err(ctx.unsupported("cluster_type"));
            }
            None => D::Static,
        };
        if !matches!(kind, D::StrictDns | D::LogicalDns) {
            reject_set!(ctx; dns_refresh_rate, respect_dns_ttl, dns_lookup_family);
        }
        let discovery = match kind {
            D::Eds => {
                reject_set!(ctx; load_assignment);
                let cfg = eds_cluster_config.ok_or_else(|| ctx.missing("eds_cluster_config"))?;
                let ectx = ctx.at("eds_cluster_config");
                let xcl::cluster::EdsClusterConfig {
                    eds_config,
                    service_name,
                } = cfg;
                ads_source(&ectx.at("eds_config"), eds_config)?;
                Discovery::Eds {
                    service_name: if service_name.is_empty() {
                        name.clone()
                    } else {
                        service_name
                    },
                }
            }
            D::Static => {
                reject_set!(ctx; eds_cluster_config);
                let la = load_assignment.unwrap_or_else(|| xcl_empty_assignment(&name));
                Discovery::Static(inline_assignment(&ctx.at("load_assignment"), la)?)
            }
            D::OriginalDst => {
                reject_set!(ctx; eds_cluster_config, load_assignment);
                Discovery::OriginalDst
            }
            D::StrictDns | D::LogicalDns => {
                reject_set!(ctx; eds_cluster_config);
                let settings = crate::dns::DnsSettings {
                    load_assignment,
                    dns_refresh_rate,
                    respect_dns_ttl,
                    dns_lookup_family,
                };
                let logical = kind == D::LogicalDns;
                Discovery::Dns(Arc::new(crate::dns::dns_cluster(
                    &ctx, &name, logical, settings,
                )?))
            }
        };

        use xcl::cluster::LbPolicy as L;
        let lb_policy = match L::try_from(lb_policy) {
            Ok(L::RoundRobin) => LbPolicy::RoundRobin,
            Ok(L::LeastRequest) => LbPolicy::LeastRequest,
            Ok(L::Random) => LbPolicy::Random,
            Ok(L::RingHash) => LbPolicy::RingHash,
            Ok(L::Maglev) => LbPolicy::Maglev,
            Ok(L::ClusterProvided) if matches!(discovery, Discovery::OriginalDst) => {
                LbPolicy::ClusterProvided
            }
            Ok(other) => {
                return Err(ctx.invalid(
                    "lb_policy",
                    format!("{} is not supported", other.as_str_name()),
                ));
            }
            Err(_) => return Err(ctx.invalid("lb_policy", format!("unknown value {lb_policy}"))),
        };

        let connect_timeout = match connect_timeout {
            Some(d) => duration(&ctx, "connect_timeout", &d)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let circuit_breaker = circuit_breakers
            .map(|cb| circuit_breaker(&ctx.at("circuit_breakers"), cb))
            .transpose()?;
        let outlier_detection = outlier_detection
            .map(|od| outlier(&ctx.at("outlier_detection"), od))
            .transpose()?;
        let http = match typed_extension_protocol_options.remove(HTTP_OPTIONS) {
            Some(any) => {
                let ctx = ctx.key("typed_extension_protocol_options", HTTP_OPTIONS);
                http_options(&ctx, decode_any(&ctx, "typed_config", &any)?)?
            }
            None => HttpOptions::default(),
        };
        if let Some(key) = typed_extension_protocol_options.keys().next() {
            return Err(ctx.unsupported(&format!("typed_extension_protocol_options[\"{key}\"]")));
        }
        let tls = transport_socket
            .map(|ts| tls::upstream(&ctx.at("transport_socket"), ts))
            .transpose()?;
        let hash_table_size = hash_table_size(&ctx, lb_policy, lb_config)?;
        let tcp_keepalive = match upstream_connection_options {
            None => None,
            Some(o) => {
                let octx = ctx.at("upstream_connection_options");
                let xcl::UpstreamConnectionOptions {
                    tcp_keepalive,
                    set_local_interface_name_on_upstream_connections,
                    happy_eyeballs_config,
                } = o;
                reject_set!(octx; set_local_interface_name_on_upstream_connections, happy_eyeballs_config);
                tcp_keepalive.map(|k| TcpKeepalive {
                    probes: k.keepalive_probes.map(|v| v.value),
                    time: k.keepalive_time.map(|v| v.value),
                    interval: k.keepalive_interval.map(|v| v.value),
                })
            }
        };
        let (healthy_panic_threshold, locality_weighted) = match common_lb_config {
            Some(c) => common_lb(&ctx.at("common_lb_config"), c)?,
            None => (DEFAULT_PANIC_THRESHOLD, false),
        };
        Ok(Cluster {
            name,
            discovery,
            lb_policy,
            connect_timeout,
            circuit_breaker,
            outlier_detection,
            http,
            tls,
            healthy_panic_threshold,
            locality_weighted,
            hash_table_size,
            tcp_keepalive,
        })
    }
}

/// The ring or table size of a consistent-hash cluster; other `lb_config`
/// kinds are refused.
fn hash_table_size(
    ctx: &Ctx,
    policy: LbPolicy,
    lb_config: Option<xcl::cluster::LbConfig>,
) -> Result<Option<u64>, ConfigError> {
    use xcl::cluster::LbConfig as C;
    match (lb_config, policy) {
        (None, _) => Ok(None),
        (Some(C::RingHashLbConfig(r)), LbPolicy::RingHash) => {
            let rctx = ctx.at("ring_hash_lb_config");
            let xcl::cluster::RingHashLbConfig {
                minimum_ring_size,
                hash_function,
                maximum_ring_size,
            } = r;
            // hash_function: the proxy has its own stable hash (see lb/hash.rs).
            let _ = hash_function;
            reject_set!(rctx; maximum_ring_size);
            Ok(minimum_ring_size.map(|v| v.value))
        }
        (Some(C::MaglevLbConfig(m)), LbPolicy::Maglev) => {
            let mctx = ctx.at("maglev_lb_config");
            let xcl::cluster::MaglevLbConfig { table_size } = m;
            let size = table_size.map(|v| v.value);
            if size.is_some_and(|s| s < 2) {
                return Err(mctx.invalid("table_size", "must be at least 2"));
            }
            Ok(size)
        }
        (Some(C::RingHashLbConfig(_)), _) => {
            Err(ctx.invalid("ring_hash_lb_config", "only valid with lb_policy RING_HASH"))
        }
        (Some(C::MaglevLbConfig(_)), _) => {
            Err(ctx.invalid("maglev_lb_config", "only valid with lb_policy MAGLEV"))
        }
        (Some(C::OriginalDstLbConfig(_)), _) => Err(ctx.unsupported("original_dst_lb_config")),
        (Some(C::LeastRequestLbConfig(_)), _) => Err(ctx.unsupported("least_request_lb_config")),
        (Some(C::RoundRobinLbConfig(_)), _) => Err(ctx.unsupported("round_robin_lb_config")),
    }
}

fn common_lb(ctx: &Ctx, c: xcl::cluster::CommonLbConfig) -> Result<(f64, bool), ConfigError> {
    use xcl::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let xcl::cluster::CommonLbConfig {
        healthy_panic_threshold,
        update_merge_window,
        ignore_new_hosts_until_first_hc,
        close_connections_on_host_set_change,
        consistent_hashing_lb_config,
        override_host_status,
        locality_config_specifier,
    } = c;
    reject_set!(ctx; update_merge_window, ignore_new_hosts_until_first_hc,
        close_connections_on_host_set_change, consistent_hashing_lb_config, override_host_status);
    let panic = healthy_panic_threshold.map_or(DEFAULT_PANIC_THRESHOLD, |p| p.value);
    if !(0.0..=100.0).contains(&panic) {
        return Err(ctx.invalid(
            "healthy_panic_threshold",
            format!("{panic} is not a percentage"),
        ));
    }
    let locality_weighted = match locality_config_specifier {
        None => false,
        Some(L::LocalityWeightedLbConfig(_)) => true,
        Some(L::ZoneAwareLbConfig(_)) => return Err(ctx.unsupported("zone_aware_lb_config")),
    };
    Ok((panic, locality_weighted))
}

fn xcl_empty_assignment(
    name: &str,
) -> mesh_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
    mesh_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        ..Default::default()
    }
}

/// Accepts only `{ ads: {} }`: the proxy has one xDS stream.
pub(crate) fn ads_source(ctx: &Ctx, src: Option<xc::ConfigSource>) -> Result<(), ConfigError> {
    let src = src.ok_or_else(|| ctx.missing("ads"))?;
    let xc::ConfigSource {
        authorities,
        initial_fetch_timeout,
        resource_api_version,
        config_source_specifier,
    } = src;
    // resource_api_version V3 (2) is the only version there is; AUTO (0) means the same.
    reject_set!(ctx; authorities, initial_fetch_timeout);
    if resource_api_version != 0 && resource_api_version != xc::ApiVersion::V3 as i32 {
        return Err(ctx.invalid("resource_api_version", "only V3 is supported"));
    }
    match config_source_specifier {
        Some(xc::config_source::ConfigSourceSpecifier::Ads(_)) => Ok(()),
        Some(_) => Err(ctx.invalid("config_source_specifier", "only ads is supported")),
        None => Err(ctx.missing("ads")),
    }
}

fn circuit_breaker(ctx: &Ctx, cb: xcl::CircuitBreakers) -> Result<CircuitBreaker, ConfigError> {
    let xcl::CircuitBreakers {
        thresholds,
        per_host_thresholds,
    } = cb;
    reject_set!(ctx; per_host_thresholds);
    if thresholds.len() > 1 {
        return Err(ctx.invalid(
            "thresholds",
            "only one (DEFAULT priority) entry is supported",
        ));
    }
    let Some(t) = thresholds.into_iter().next() else {
        return Ok(CircuitBreaker::default());
    };
    let ctx = ctx.idx("thresholds", 0);
    let xcl::circuit_breakers::Thresholds {
        priority,
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        retry_budget,
        track_remaining,
        max_connection_pools,
    } = t;
    reject_set!(ctx; priority, track_remaining, max_connection_pools);
    let retry_budget = retry_budget
        .map(|b| {
            let bctx = ctx.at("retry_budget");
            let xcl::circuit_breakers::thresholds::RetryBudget {
                budget_percent,
                min_retry_concurrency,
                budget_interval,
            } = b;
            reject_set!(bctx; budget_interval);
            let budget_percent = budget_percent.map_or(20.0, |p| p.value);
            if !(0.0..=100.0).contains(&budget_percent) {
                return Err(bctx.invalid(
                    "budget_percent",
                    format!("{budget_percent} is not a percentage"),
                ));
            }
            Ok(RetryBudget {
                budget_percent,
                min_retry_concurrency: min_retry_concurrency.map_or(3, |v| v.value),
            })
        })
        .transpose()?;
    Ok(CircuitBreaker {
        max_connections: max_connections.map(|v| v.value),
        max_pending_requests: max_pending_requests.map(|v| v.value),
        max_requests: max_requests.map(|v| v.value),
        max_retries: max_retries.map(|v| v.value),
        retry_budget,
    })
}

fn outlier(ctx: &Ctx, od: xcl::OutlierDetection) -> Result<OutlierDetection, ConfigError> {
    let xcl::OutlierDetection {
        consecutive_5xx,
        interval,
        base_ejection_time,
        max_ejection_percent,
        enforcing_consecutive_5xx,
        enforcing_success_rate,
        success_rate_minimum_hosts,
        success_rate_request_volume,
        success_rate_stdev_factor,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        split_external_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure,
        enforcing_local_origin_success_rate,
        failure_percentage_threshold,
        enforcing_failure_percentage,
        enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts,
        failure_percentage_request_volume,
        max_ejection_time,
        max_ejection_time_jitter,
        successful_active_health_check_uneject_host,
        monitors,
        always_eject_one_host,
        detect_degraded_hosts,
    } = od;
    // Istio sets enforcing_success_rate to 0 to turn success-rate ejection
    // off, which is also what the proxy does; any other value is refused.
    if enforcing_success_rate.is_some_and(|v| v.value != 0) {
        return Err(ctx.unsupported("enforcing_success_rate"));
    }
    reject_set!(ctx; success_rate_minimum_hosts, success_rate_request_volume, success_rate_stdev_factor,
        split_external_local_origin_errors, consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure, enforcing_local_origin_success_rate,
        failure_percentage_threshold, enforcing_failure_percentage, enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts, failure_percentage_request_volume,
        max_ejection_time_jitter, successful_active_health_check_uneject_host, monitors,
        always_eject_one_host, detect_degraded_hosts);
    Ok(OutlierDetection {
        consecutive_5xx: consecutive_5xx.map(|v| v.value),
        consecutive_gateway_failure: consecutive_gateway_failure.map(|v| v.value),
        enforcing_consecutive_5xx: enforcing_consecutive_5xx.map(|v| v.value),
        enforcing_consecutive_gateway_failure: enforcing_consecutive_gateway_failure
            .map(|v| v.value),
        interval: opt_duration(ctx, "interval", interval.as_ref())?,
        base_ejection_time: opt_duration(ctx, "base_ejection_time", base_ejection_time.as_ref())?,
        max_ejection_percent: max_ejection_percent.map(|v| v.value),
        max_ejection_time: opt_duration(ctx, "max_ejection_time", max_ejection_time.as_ref())?,
    })
}

fn http_options(ctx: &Ctx, o: xh::HttpProtocolOptions) -> Result<HttpOptions, ConfigError> {
    use xh::http_protocol_options::UpstreamProtocolOptions as U;
    use xh::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    let xh::HttpProtocolOptions {
        common_http_protocol_options,
        upstream_http_protocol_options,
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy,
        upstream_protocol_options,
    } = o;
    reject_set!(ctx; upstream_http_protocol_options, http_filters, header_validation_config, outlier_detection,
        request_mirror_policies, hash_policy, retry_policy);
    let mut out = HttpOptions::default();
    if let Some(common) = common_http_protocol_options {
        let ctx = ctx.at("common_http_protocol_options");
        let xc::HttpProtocolOptions {
            idle_timeout,
            max_connection_duration,
            max_connection_duration_jitter,
            max_headers_count,
            max_response_headers_kb,
            max_stream_duration,
            headers_with_underscores_action,
            max_requests_per_connection,
        } = common;
        reject_set!(ctx; max_connection_duration_jitter, max_headers_count,
            max_response_headers_kb, max_stream_duration, headers_with_underscores_action);
        out.idle_timeout = opt_duration(&ctx, "idle_timeout", idle_timeout.as_ref())?;
        out.max_requests_per_connection = max_requests_per_connection.map(|v| v.value);
        out.max_connection_duration = opt_duration(
            &ctx,
            "max_connection_duration",
            max_connection_duration.as_ref(),
        )?;
    }
    out.protocol = match upstream_protocol_options {
        None => UpstreamProtocol::Http1,
        Some(U::UseDownstreamProtocolConfig(d)) => {
            let dctx = ctx.at("use_downstream_protocol_config");
            let xh::http_protocol_options::UseDownstreamHttpConfig {
                http_protocol_options: _http1_defaults,
                http2_protocol_options,
                http3_protocol_options,
            } = d;
            reject_set!(dctx; http3_protocol_options);
            if let Some(h2) = http2_protocol_options {
                out.max_concurrent_streams = http2(&dctx.at("http2_protocol_options"), h2)?;
            }
            UpstreamProtocol::Downstream
        }
        Some(U::ExplicitHttpConfig(e)) => match e.protocol_config {
            Some(P::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
            Some(P::Http2ProtocolOptions(h2)) => {
                let hctx = ctx.at("explicit_http_config.http2_protocol_options");
                out.max_concurrent_streams = http2(&hctx, h2)?;
                UpstreamProtocol::Http2
            }
            Some(P::Http3ProtocolOptions(_)) => {
                return Err(ctx.unsupported("explicit_http_config.http3_protocol_options"));
            }
            None => UpstreamProtocol::Http1,
        },
        Some(U::AutoConfig(_)) => return Err(ctx.unsupported("auto_config")),
    };
    Ok(out)
}

/// Upstream HTTP/2 options: `max_concurrent_streams` is honoured (returned);
/// any other field set is refused by name.
fn http2(ctx: &Ctx, o: xc::Http2ProtocolOptions) -> Result<Option<u32>, ConfigError> {
    let xc::Http2ProtocolOptions {
        hpack_table_size,
        max_concurrent_streams,
        initial_stream_window_size,
        initial_connection_window_size,
        allow_connect,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        connection_keepalive,
        use_oghttp2_codec,
        max_metadata_size,
        enable_huffman_encoding,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate,
    } = o;
    reject_set!(ctx; hpack_table_size, initial_stream_window_size, initial_connection_window_size,
        allow_connect, allow_metadata, max_outbound_frames, max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload, max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent, stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message, custom_settings_parameters, connection_keepalive,
        use_oghttp2_codec, max_metadata_size, enable_huffman_encoding, max_header_field_size_kb,
        disallow_obs_text, stream_reset_burst, stream_reset_rate);
    match max_concurrent_streams.map(|v| v.value) {
        Some(0) => Err(ctx.invalid("max_concurrent_streams", "must be at least 1")),
        m => Ok(m),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mesh_proto::envoy::pb::google::protobuf as wkt;
    use prost::Message;

    pub(crate) fn eds_cluster(name: &str) -> xcl::Cluster {
        xcl::Cluster {
            name: name.into(),
            cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
                xcl::cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(xcl::cluster::EdsClusterConfig {
                eds_config: Some(xc::ConfigSource {
                    config_source_specifier: Some(xc::config_source::ConfigSourceSpecifier::Ads(
                        Default::default(),
                    )),
                    ..Default::default()
                }),
                service_name: String::new(),
            }),
            connect_timeout: Some(wkt::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    pub(crate) fn static_cluster(name: &str, addr: &str, port: u32) -> xcl::Cluster {
        xcl::Cluster {
            name: name.into(),
            cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
                xcl::cluster::DiscoveryType::Static as i32,
            )),
            load_assignment: Some(crate::config::endpoint::tests::cla(
                name,
                &[(addr, port, 0, None)],
            )),
            ..Default::default()
        }
    }

    #[test]
    fn eds_cluster_with_options_converts() {
        let mut c = eds_cluster("outbound|9080||reviews.default.svc.cluster.local");
        c.lb_policy = xcl::cluster::LbPolicy::LeastRequest as i32;
        c.circuit_breakers = Some(xcl::CircuitBreakers {
            thresholds: vec![xcl::circuit_breakers::Thresholds {
                max_connections: Some(wkt::UInt32Value { value: 100 }),
                ..Default::default()
            }],
            per_host_thresholds: vec![],
        });
        let opts = xh::HttpProtocolOptions {
            common_http_protocol_options: Some(xc::HttpProtocolOptions {
                idle_timeout: Some(wkt::Duration { seconds: 30, nanos: 0 }),
                ..Default::default()
            }),
            upstream_protocol_options: Some(xh::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                xh::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(xh::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS.into(),
            wkt::Any {
                type_url: <xh::HttpProtocolOptions as prost::Name>::type_url(),
                value: opts.encode_to_vec(),
            },
        );
        c.transport_socket = Some(crate::config::tls::tests::istio_upstream(
            "sni",
            "spiffe://cluster.local/ns/default/sa/r",
        ));
        let c = Cluster::try_from(c).unwrap();
        assert!(matches!(&c.discovery, Discovery::Eds { service_name } if service_name == &c.name));
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.circuit_breaker.unwrap().max_connections, Some(100));
        assert_eq!(c.http.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.http.protocol, UpstreamProtocol::Http2);
        assert_eq!(c.tls.unwrap().sni, "sni");
    }

    #[test]
    fn keepalive_connection_limits_hashing_and_panic_threshold_convert() {
        let mut c = eds_cluster("ka");
        c.lb_policy = xcl::cluster::LbPolicy::Maglev as i32;
        c.lb_config = Some(xcl::cluster::LbConfig::MaglevLbConfig(
            xcl::cluster::MaglevLbConfig {
                table_size: Some(wkt::UInt64Value { value: 1009 }),
            },
        ));
        c.upstream_connection_options = Some(xcl::UpstreamConnectionOptions {
            tcp_keepalive: Some(xc::TcpKeepalive {
                keepalive_probes: Some(wkt::UInt32Value { value: 3 }),
                keepalive_time: Some(wkt::UInt32Value { value: 60 }),
                keepalive_interval: None,
            }),
            ..Default::default()
        });
        c.common_lb_config = Some(xcl::cluster::CommonLbConfig {
            healthy_panic_threshold: Some(mesh_proto::envoy::pb::envoy::r#type::v3::Percent {
                value: 0.0,
            }),
            ..Default::default()
        });
        let opts = xh::HttpProtocolOptions {
            common_http_protocol_options: Some(xc::HttpProtocolOptions {
                max_connection_duration: Some(wkt::Duration {
                    seconds: 90,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS.into(),
            wkt::Any {
                type_url: <xh::HttpProtocolOptions as prost::Name>::type_url(),
                value: opts.encode_to_vec(),
            },
        );
        let c = Cluster::try_from(c).unwrap();
        assert_eq!(c.hash_table_size, Some(1009));
        assert_eq!(
            c.tcp_keepalive,
            Some(TcpKeepalive {
                probes: Some(3),
                time: Some(60),
                interval: None
            })
        );
        assert_eq!(
            c.http.max_connection_duration,
            Some(Duration::from_secs(90))
        );
        assert_eq!(c.healthy_panic_threshold, 0.0);
        // A ring config on a maglev cluster is a mistake, named as such.
        let mut bad = eds_cluster("bad");
        bad.lb_policy = xcl::cluster::LbPolicy::Maglev as i32;
        bad.lb_config = Some(xcl::cluster::LbConfig::RingHashLbConfig(Default::default()));
        assert_eq!(
            Cluster::try_from(bad).unwrap_err().to_string(),
            "Cluster bad: invalid ring_hash_lb_config: only valid with lb_policy RING_HASH"
        );
    }

    fn with_http_options(mut c: xcl::Cluster, opts: &xh::HttpProtocolOptions) -> xcl::Cluster {
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS.into(),
            wkt::Any {
                type_url: <xh::HttpProtocolOptions as prost::Name>::type_url(),
                value: opts.encode_to_vec(),
            },
        );
        c
    }

    #[test]
    fn h2_max_concurrent_streams_is_honoured_and_other_h2_fields_are_refused_by_name() {
        use xh::http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
            explicit_http_config::ProtocolConfig,
        };
        let h2 = |o: xc::Http2ProtocolOptions| xh::HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(o)),
                },
            )),
            ..Default::default()
        };
        let streams = xc::Http2ProtocolOptions {
            max_concurrent_streams: Some(wkt::UInt32Value { value: 50 }),
            ..Default::default()
        };
        let c =
            Cluster::try_from(with_http_options(eds_cluster("h2"), &h2(streams.clone()))).unwrap();
        assert_eq!(c.http.protocol, UpstreamProtocol::Http2);
        assert_eq!(c.http.max_concurrent_streams, Some(50));
        let downstream = xh::HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http2_protocol_options: Some(streams),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let c = Cluster::try_from(with_http_options(eds_cluster("d"), &downstream)).unwrap();
        assert_eq!(c.http.protocol, UpstreamProtocol::Downstream);
        assert_eq!(c.http.max_concurrent_streams, Some(50));
        let windows = xc::Http2ProtocolOptions {
            initial_stream_window_size: Some(wkt::UInt32Value { value: 65535 }),
            ..Default::default()
        };
        let err = Cluster::try_from(with_http_options(eds_cluster("w"), &h2(windows))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster w: unsupported field typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"].explicit_http_config.http2_protocol_options.initial_stream_window_size"
        );
    }

    #[test]
    fn lb_subset_config_is_rejected_by_name() {
        let mut c = eds_cluster("outbound|9080||x");
        c.lb_subset_config = Some(Default::default());
        let err = Cluster::try_from(c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster outbound|9080||x: unsupported field lb_subset_config"
        );
    }

    #[test]
    fn unknown_protocol_options_key_is_rejected_by_name() {
        let mut c = eds_cluster("x");
        c.typed_extension_protocol_options
            .insert("envoy.other".into(), Default::default());
        let err = Cluster::try_from(c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster x: unsupported field typed_extension_protocol_options[\"envoy.other\"]"
        );
    }

    #[test]
    fn strict_dns_cluster_keeps_its_hosts_and_dns_fields_elsewhere_are_refused() {
        let mut c = static_cluster("dns", "127.0.0.1", 80);
        c.cluster_discovery_type = Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::StrictDns as i32,
        ));
        c.respect_dns_ttl = true;
        let Discovery::Dns(d) = Cluster::try_from(c).unwrap().discovery else {
            panic!("a DNS cluster")
        };
        assert_eq!(d.spec.hosts, ["127.0.0.1"]);
        assert!(d.spec.respect_ttl);
        let mut c = static_cluster("static", "127.0.0.1", 80);
        c.respect_dns_ttl = true;
        assert_eq!(
            Cluster::try_from(c).unwrap_err().to_string(),
            "Cluster static: unsupported field respect_dns_ttl"
        );
    }

    #[test]
    fn static_and_original_dst_clusters_convert() {
        let c = Cluster::try_from(static_cluster("inbound|9080||", "127.0.0.1", 9080)).unwrap();
        let Discovery::Static(la) = &c.discovery else {
            panic!("static expected")
        };
        assert_eq!(la.endpoints[0].address, "127.0.0.1:9080".parse().unwrap());
        let pt = xcl::Cluster {
            name: "PassthroughCluster".into(),
            cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
                xcl::cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: xcl::cluster::LbPolicy::ClusterProvided as i32,
            ..Default::default()
        };
        // ORIGINAL_DST needs lb_policy CLUSTER_PROVIDED in Envoy.
        let c = Cluster::try_from(pt.clone()).unwrap();
        assert!(matches!(c.discovery, Discovery::OriginalDst));
        assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
        let mut eds = eds_cluster("e");
        eds.lb_policy = xcl::cluster::LbPolicy::ClusterProvided as i32;
        let err = Cluster::try_from(eds).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster e: invalid lb_policy: CLUSTER_PROVIDED is not supported"
        );
    }
}
