//! The HTTP connection manager network filter and its HTTP filters
//! (`envoy.filters.http.fault`, `envoy.filters.http.router`).

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::extensions::filters::http::fault::v3 as xf;
use mesh_proto::envoy::pb::envoy::extensions::filters::http::router::v3 as xrouter;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xhcm;
use mesh_proto::envoy::pb::envoy::r#type::v3 as xty;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use serde::Serialize;

use super::check::{decode_any, duration, reject_set};
use super::cluster::ads_source;
use super::route::{RouteConfig, route_config};
use super::{ConfigError, Ctx};

/// Name of the fault filter.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of the router filter.
pub(crate) const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// Where an HTTP connection manager gets its routes.
#[derive(Debug, Clone, Serialize)]
pub enum RouteSource {
    /// From RDS, by route configuration name.
    Rds(String),
    /// Inline in the listener.
    Inline(Arc<RouteConfig>),
}

/// One HTTP filter, in chain order.
#[derive(Debug, Clone, Serialize)]
pub enum HttpFilter {
    /// Fault injection; the filter-level config (usually empty) is the
    /// default, routes override it through `typed_per_filter_config`.
    Fault(FaultConfig),
    /// The terminal router filter.
    Router,
}

/// The HTTP connection manager.
#[derive(Debug, Clone, Serialize)]
pub struct HttpConnectionManager {
    /// Stats prefix.
    pub stat_prefix: String,
    /// Route source.
    pub routes: RouteSource,
    /// HTTP filters; the last one is always [`HttpFilter::Router`].
    pub http_filters: Vec<HttpFilter>,
}

/// A fixed delay applied to a share of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultDelay {
    /// How long to delay.
    pub delay: Duration,
    /// Share of requests delayed, 0.0 to 1.0.
    pub fraction: f64,
}

/// An abort with an HTTP status applied to a share of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultAbort {
    /// The status returned.
    pub status: u16,
    /// Share of requests aborted, 0.0 to 1.0.
    pub fraction: f64,
}

/// Fault injection settings (`HTTPFault`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultConfig {
    /// Delay, if any.
    pub delay: Option<FaultDelay>,
    /// Abort, if any.
    pub abort: Option<FaultAbort>,
}

pub(crate) fn hcm(ctx: &Ctx, any: &wkt::Any) -> Result<HttpConnectionManager, ConfigError> {
    let m: xhcm::HttpConnectionManager = decode_any(ctx, "typed_config", any)?;
    let ctx = ctx.at("typed_config");
    let xhcm::HttpConnectionManager {
        codec_type,
        stat_prefix,
        http_filters,
        add_user_agent,
        tracing,
        common_http_protocol_options,
        http1_safe_max_connection_duration,
        http_protocol_options,
        http2_protocol_options,
        http3_protocol_options,
        server_name,
        server_header_transformation,
        scheme_header_transformation,
        max_request_headers_kb,
        stream_idle_timeout,
        stream_flush_timeout,
        request_timeout,
        request_headers_timeout,
        drain_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        access_log_options,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        internal_address_config,
        skip_xff_append,
        via,
        generate_request_id,
        preserve_external_request_id,
        always_set_request_id_in_response,
        forward_client_cert_details,
        set_current_client_cert_details,
        forward_client_cert_matcher,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        upgrade_configs,
        normalize_path,
        merge_slashes,
        path_with_escaped_slashes_action,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        route_specifier,
        strip_port_mode,
    } = m;
    // codec_type AUTO (0) is the only mode: the proxy detects the protocol.
    reject_set!(ctx; codec_type, add_user_agent, tracing, common_http_protocol_options,
        http1_safe_max_connection_duration, http_protocol_options, http2_protocol_options,
        http3_protocol_options, server_name, server_header_transformation, scheme_header_transformation,
        max_request_headers_kb, stream_idle_timeout, stream_flush_timeout, request_timeout,
        request_headers_timeout, drain_timeout, drain_timeout_jitter, delayed_close_timeout, access_log,
        access_log_flush_interval, flush_access_log_on_new_request, access_log_options, use_remote_address,
        xff_num_trusted_hops, original_ip_detection_extensions, early_header_mutation_extensions,
        internal_address_config, skip_xff_append, via, generate_request_id, preserve_external_request_id,
        always_set_request_id_in_response, forward_client_cert_details, set_current_client_cert_details,
        forward_client_cert_matcher, proxy_100_continue, represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        upgrade_configs, normalize_path, merge_slashes, path_with_escaped_slashes_action, request_id_extension,
        local_reply_config, strip_matching_host_port, stream_error_on_invalid_http_message,
        path_normalization_options, strip_trailing_host_dot, proxy_status_config,
        typed_header_validation_config, append_x_forwarded_port, append_local_overload,
        add_proxy_protocol_connection_state, forward_proto_config, strip_port_mode);
    use xhcm::http_connection_manager::RouteSpecifier as R;
    let routes = match route_specifier {
        Some(R::Rds(rds)) => {
            let rctx = ctx.at("rds");
            let xhcm::Rds {
                config_source,
                route_config_name,
            } = rds;
            ads_source(&rctx.at("config_source"), config_source)?;
            if route_config_name.is_empty() {
                return Err(rctx.missing("route_config_name"));
            }
            RouteSource::Rds(route_config_name)
        }
        Some(R::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(route_config(&ctx.at("route_config"), rc)?))
        }
        Some(R::ScopedRoutes(_)) => return Err(ctx.unsupported("scoped_routes")),
        None => return Err(ctx.missing("rds")),
    };
    let mut filters = Vec::with_capacity(http_filters.len());
    let count = http_filters.len();
    for (i, f) in http_filters.into_iter().enumerate() {
        let fctx = ctx.idx("http_filters", i);
        let filter = http_filter(&fctx, f)?;
        let is_router = matches!(filter, HttpFilter::Router);
        if is_router != (i + 1 == count) {
            return Err(fctx.invalid("name", "the router filter must be last, and only last"));
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(ctx.missing("http_filters"));
    }
    Ok(HttpConnectionManager {
        stat_prefix,
        routes,
        http_filters: filters,
    })
}

fn http_filter(ctx: &Ctx, f: xhcm::HttpFilter) -> Result<HttpFilter, ConfigError> {
    let xhcm::HttpFilter {
        name,
        is_optional,
        disabled,
        config_type,
    } = f;
    reject_set!(ctx; is_optional, disabled);
    let any = match config_type {
        Some(xhcm::http_filter::ConfigType::TypedConfig(any)) => any,
        Some(xhcm::http_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported("config_discovery"));
        }
        None => return Err(ctx.missing("typed_config")),
    };
    match name.as_str() {
        FAULT_FILTER => Ok(HttpFilter::Fault(fault(
            &ctx.at("typed_config"),
            decode_any(ctx, "typed_config", &any)?,
        )?)),
        ROUTER_FILTER => {
            let r: xrouter::Router = decode_any(ctx, "typed_config", &any)?;
            let ctx = ctx.at("typed_config");
            let xrouter::Router {
                dynamic_stats,
                start_child_span,
                upstream_log,
                upstream_log_options,
                suppress_envoy_headers,
                strict_check_headers,
                respect_expected_rq_timeout,
                suppress_grpc_request_failure_code_stats,
                upstream_http_filters,
                reject_connect_request_early_data,
            } = r;
            reject_set!(ctx; dynamic_stats, start_child_span, upstream_log, upstream_log_options,
                suppress_envoy_headers, strict_check_headers, respect_expected_rq_timeout,
                suppress_grpc_request_failure_code_stats, upstream_http_filters, reject_connect_request_early_data);
            Ok(HttpFilter::Router)
        }
        other => Err(ctx.invalid("name", format!("unsupported HTTP filter {other:?}"))),
    }
}

fn fraction(ctx: &Ctx, p: Option<xty::FractionalPercent>) -> Result<f64, ConfigError> {
    // Envoy: an unset percentage means 100%.
    let Some(xty::FractionalPercent {
        numerator,
        denominator,
    }) = p
    else {
        return Ok(1.0);
    };
    use xty::fractional_percent::DenominatorType as D;
    let denom = match D::try_from(denominator) {
        Ok(D::Hundred) => 100.0,
        Ok(D::TenThousand) => 10_000.0,
        Ok(D::Million) => 1_000_000.0,
        Err(_) => {
            return Err(ctx.invalid(
                "percentage.denominator",
                format!("unknown value {denominator}"),
            ));
        }
    };
    Ok((f64::from(numerator) / denom).min(1.0))
}

/// Converts an `HTTPFault` (filter config or per-route override).
pub(crate) fn fault(ctx: &Ctx, f: xf::HttpFault) -> Result<FaultConfig, ConfigError> {
    let xf::HttpFault {
        delay,
        abort,
        upstream_cluster,
        headers,
        downstream_nodes,
        max_active_faults,
        response_rate_limit,
        delay_percent_runtime,
        abort_percent_runtime,
        delay_duration_runtime,
        abort_http_status_runtime,
        max_active_faults_runtime,
        response_rate_limit_percent_runtime,
        abort_grpc_status_runtime,
        disable_downstream_cluster_stats,
        filter_metadata,
    } = f;
    reject_set!(ctx; upstream_cluster, headers, downstream_nodes, max_active_faults, response_rate_limit,
        delay_percent_runtime, abort_percent_runtime, delay_duration_runtime, abort_http_status_runtime,
        max_active_faults_runtime, response_rate_limit_percent_runtime, abort_grpc_status_runtime,
        disable_downstream_cluster_stats, filter_metadata);
    let delay = delay
        .map(|d| {
            use mesh_proto::envoy::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier as S;
            let ctx = ctx.at("delay");
            let mesh_proto::envoy::pb::envoy::extensions::filters::common::fault::v3::FaultDelay {
                percentage,
                fault_delay_secifier,
            } = d;
            let delay = match fault_delay_secifier {
                Some(S::FixedDelay(d)) => duration(&ctx, "fixed_delay", &d)?,
                Some(S::HeaderDelay(_)) => return Err(ctx.unsupported("header_delay")),
                None => return Err(ctx.missing("fixed_delay")),
            };
            Ok(FaultDelay {
                delay,
                fraction: fraction(&ctx, percentage)?,
            })
        })
        .transpose()?;
    let abort = abort
        .map(|a| {
            use xf::fault_abort::ErrorType as E;
            let ctx = ctx.at("abort");
            let xf::FaultAbort {
                percentage,
                response_body,
                error_type,
            } = a;
            reject_set!(ctx; response_body);
            let status = match error_type {
                Some(E::HttpStatus(s)) => u16::try_from(s)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .ok_or_else(|| {
                        ctx.invalid("http_status", format!("{s} is not an HTTP status"))
                    })?,
                Some(E::GrpcStatus(_)) => return Err(ctx.unsupported("grpc_status")),
                Some(E::HeaderAbort(_)) => return Err(ctx.unsupported("header_abort")),
                None => return Err(ctx.missing("http_status")),
            };
            Ok(FaultAbort {
                status,
                fraction: fraction(&ctx, percentage)?,
            })
        })
        .transpose()?;
    Ok(FaultConfig { delay, abort })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost::Message;

    pub(crate) fn any<T: Message + prost::Name>(m: &T) -> wkt::Any {
        wkt::Any {
            type_url: T::type_url(),
            value: m.encode_to_vec(),
        }
    }

    pub(crate) fn filter(name: &str, cfg: wkt::Any) -> xhcm::HttpFilter {
        xhcm::HttpFilter {
            name: name.into(),
            config_type: Some(xhcm::http_filter::ConfigType::TypedConfig(cfg)),
            ..Default::default()
        }
    }

    pub(crate) fn rds_hcm(route_name: &str) -> xhcm::HttpConnectionManager {
        xhcm::HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_9080".into(),
            route_specifier: Some(xhcm::http_connection_manager::RouteSpecifier::Rds(xhcm::Rds {
                route_config_name: route_name.into(),
                config_source: Some(mesh_proto::envoy::pb::envoy::config::core::v3::ConfigSource {
                    config_source_specifier: Some(
                        mesh_proto::envoy::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(
                            Default::default(),
                        ),
                    ),
                    ..Default::default()
                }),
            })),
            http_filters: vec![
                filter(FAULT_FILTER, any(&xf::HttpFault::default())),
                filter(ROUTER_FILTER, any(&xrouter::Router::default())),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn hcm_with_rds_fault_and_router_converts() {
        let ctx = Ctx::new("Listener", "l");
        let h = hcm(&ctx, &any(&rds_hcm("9080"))).unwrap();
        assert!(matches!(&h.routes, RouteSource::Rds(n) if n == "9080"));
        assert!(
            matches!(h.http_filters.as_slice(), [HttpFilter::Fault(f), HttpFilter::Router] if *f == FaultConfig::default())
        );
    }

    #[test]
    fn unknown_http_filter_is_rejected_by_name() {
        let mut m = rds_hcm("9080");
        m.http_filters
            .insert(0, filter("envoy.filters.http.lua", wkt::Any::default()));
        let err = hcm(&Ctx::new("Listener", "l"), &any(&m)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Listener l: invalid typed_config.http_filters[0].name: unsupported HTTP filter \"envoy.filters.http.lua\""
        );
    }

    #[test]
    fn hcm_tracing_is_rejected_by_name() {
        let mut m = rds_hcm("9080");
        m.tracing = Some(Default::default());
        let err = hcm(&Ctx::new("Listener", "l"), &any(&m)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Listener l: unsupported field typed_config.tracing"
        );
    }

    #[test]
    fn fault_percentages_and_status_convert() {
        let f = fault(
            &Ctx::new("Route", "r"),
            xf::HttpFault {
                abort: Some(xf::FaultAbort {
                    percentage: Some(xty::FractionalPercent {
                        numerator: 50,
                        denominator: 0,
                    }),
                    error_type: Some(xf::fault_abort::ErrorType::HttpStatus(503)),
                    response_body: String::new(),
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            f.abort,
            Some(FaultAbort {
                status: 503,
                fraction: 0.5
            })
        );
    }
}
