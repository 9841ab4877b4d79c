//! Route tables (RDS `RouteConfiguration`): virtual hosts, routes, matches
//! and actions.

use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use regex::Regex;
use serde::Serialize;

use super::check::{decode_any, opt_duration, reject_set, sub_regex};
use super::http::{FAULT_FILTER, FaultConfig, fault};
use super::matcher::{HeaderMatch, QueryMatch, header_matcher, query_matcher, regex_matcher};
use super::{ConfigError, Ctx};

/// A route table.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Name (a port number for outbound tables, e.g. `9080`).
    pub name: String,
    /// Virtual hosts, matched by `Host`/`:authority`.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Table-wide header changes.
    pub headers: HeaderMutation,
}

/// A virtual host: the domains it answers and its routes in order.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    /// Name, e.g. `reviews.default.svc.cluster.local:9080`.
    pub name: String,
    /// Domains (exact, `*.suffix`, `prefix*` or `*`), lower case.
    pub domains: Vec<String>,
    /// Routes; the first that matches wins.
    pub routes: Vec<Route>,
    /// Host-wide header changes.
    pub headers: HeaderMutation,
}

/// Header additions and removals for requests and responses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderMutation {
    /// Added to the request.
    pub request_add: Vec<HeaderAdd>,
    /// Removed from the request.
    pub request_remove: Vec<String>,
    /// Added to the response.
    pub response_add: Vec<HeaderAdd>,
    /// Removed from the response.
    pub response_remove: Vec<String>,
}

/// How an added header combines with existing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AppendAction {
    /// Append a value (Envoy's default).
    Append,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    Overwrite,
    /// Replace only when present.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderAdd {
    /// Lower-case name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Combination with existing values.
    pub action: AppendAction,
}

/// A route: match, action and the changes it makes.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Route name (VirtualService route name), may be empty.
    pub name: String,
    /// When this route applies.
    pub matcher: RouteMatch,
    /// What happens then.
    pub action: RouteAction,
    /// Header changes.
    pub headers: HeaderMutation,
    /// Per-route fault injection (overrides the filter default).
    pub fault: Option<FaultConfig>,
}

/// How the path is matched.
#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    /// Path starts with.
    Prefix(String),
    /// Path equals (without the query).
    Exact(String),
    /// Whole path matches.
    Regex(#[serde(serialize_with = "ser_regex")] Regex),
}

fn ser_regex<S: serde::Serializer>(re: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(re.as_str())
}

/// When a route applies.
#[derive(Debug, Clone, Serialize)]
pub struct RouteMatch {
    /// Path test.
    pub path: PathMatch,
    /// Whether prefix/exact comparisons are case sensitive (default true).
    pub case_sensitive: bool,
    /// Header tests (all must hold), including `:method` and `:authority`.
    #[serde(skip)]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter tests (all must hold).
    #[serde(skip)]
    pub query: Vec<QueryMatch>,
}

/// A cluster with its share of traffic.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedTarget {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
    /// Extra header changes when this target is picked.
    pub headers: HeaderMutation,
}

/// Where a forwarded request goes.
#[derive(Debug, Clone, Serialize)]
pub enum ClusterTarget {
    /// One cluster.
    Single(String),
    /// Weighted split.
    Weighted(Vec<WeightedTarget>),
}

/// Retry settings (parsed; enforcement is listed in docs/proxy.md).
#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    /// Conditions, comma separated (`5xx,connect-failure,...`).
    pub retry_on: String,
    /// Retries after the first try.
    pub num_retries: u32,
    /// Timeout per try.
    pub per_try_timeout: Option<Duration>,
    /// Statuses retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u32>,
}

/// Forward to a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardAction {
    /// Target cluster(s).
    pub target: ClusterTarget,
    /// Whole-request timeout (Envoy default 15 s; 0 disables).
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// Replace the matched prefix with this.
    pub prefix_rewrite: Option<String>,
    /// Regex substitution on the path.
    #[serde(skip)]
    pub regex_rewrite: Option<(Regex, String)>,
    /// Replace the `Host`/`:authority`.
    pub host_rewrite: Option<String>,
    /// Mirror clusters with their sampled fraction (0.0 to 1.0).
    pub mirrors: Vec<(String, f64)>,
}

/// Answer with a redirect.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// Status (301, 302, 303, 307, 308).
    pub status: u16,
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<String>,
    /// Replace the matched prefix with this.
    pub prefix_rewrite: Option<String>,
    /// Drop the query string.
    pub strip_query: bool,
}

/// Answer directly.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// What a route does.
#[derive(Debug, Clone, Serialize)]
pub enum RouteAction {
    /// Forward upstream.
    Forward(ForwardAction),
    /// Redirect.
    Redirect(Redirect),
    /// Direct response.
    Direct(DirectResponse),
}

impl TryFrom<xr::RouteConfiguration> for RouteConfig {
    type Error = ConfigError;

    fn try_from(rc: xr::RouteConfiguration) -> Result<Self, ConfigError> {
        let ctx = Ctx::new("RouteConfiguration", &rc.name);
        route_config(&ctx, rc)
    }
}

pub(crate) fn route_config(
    ctx: &Ctx,
    rc: xr::RouteConfiguration,
) -> Result<RouteConfig, ConfigError> {
    let xr::RouteConfiguration {
        name,
        virtual_hosts,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        validate_clusters,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata: _informational,
        route_specifiers,
    } = rc;
    reject_set!(ctx; vhds, internal_only_headers, most_specific_header_mutations_wins,
        max_direct_response_body_size_bytes, cluster_specifier_plugins, request_mirror_policies,
        ignore_port_in_host_matching, vhost_header, ignore_path_parameters_in_path_matching,
        typed_per_filter_config, route_specifiers);
    // validate_clusters: false is what meshd (like Istio) sends and matches
    // the proxy, which answers NC for an unknown cluster at request time.
    if validate_clusters.is_some_and(|v| v.value) {
        return Err(ctx.unsupported("validate_clusters"));
    }
    let headers = mutation(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    )?;
    let virtual_hosts = virtual_hosts
        .into_iter()
        .enumerate()
        .map(|(i, vh)| virtual_host(&ctx.idx("virtual_hosts", i), vh))
        .collect::<Result<_, _>>()?;
    Ok(RouteConfig {
        name,
        virtual_hosts,
        headers,
    })
}

fn virtual_host(ctx: &Ctx, vh: xr::VirtualHost) -> Result<VirtualHost, ConfigError> {
    let xr::VirtualHost {
        name,
        domains,
        routes,
        matcher,
        require_tls,
        virtual_clusters,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata: _informational,
        route_specifiers,
    } = vh;
    reject_set!(ctx; matcher, require_tls, virtual_clusters, rate_limits, cors, typed_per_filter_config,
        include_request_attempt_count, include_attempt_count_in_response, retry_policy,
        retry_policy_typed_config, hedge_policy, include_is_timeout_retry_header,
        per_request_buffer_limit_bytes, request_body_buffer_limit, request_mirror_policies, route_specifiers);
    if domains.is_empty() {
        return Err(ctx.missing("domains"));
    }
    let headers = mutation(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    )?;
    let routes = routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(&ctx.idx("routes", i), r))
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost {
        name,
        domains: domains
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        routes,
        headers,
    })
}

fn route(ctx: &Ctx, r: xr::Route) -> Result<Route, ConfigError> {
    let xr::Route {
        name,
        r#match,
        metadata: _informational,
        decorator,
        mut typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        tracing,
        per_request_buffer_limit_bytes,
        stat_prefix,
        request_body_buffer_limit,
        route_specifiers,
        action,
    } = r;
    reject_set!(ctx; decorator, tracing, per_request_buffer_limit_bytes, stat_prefix, request_body_buffer_limit, route_specifiers);
    let fault = match typed_per_filter_config.remove(FAULT_FILTER) {
        Some(any) => {
            let fctx = ctx.key("typed_per_filter_config", FAULT_FILTER);
            Some(fault(&fctx, decode_any(&fctx, "typed_config", &any)?)?)
        }
        None => None,
    };
    if let Some(key) = typed_per_filter_config.keys().next() {
        return Err(ctx.unsupported(&format!("typed_per_filter_config[\"{key}\"]")));
    }
    let matcher = route_match(
        &ctx.at("match"),
        r#match.ok_or_else(|| ctx.missing("match"))?,
    )?;
    let headers = mutation(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    )?;
    let action = match action {
        Some(xr::route::Action::Route(ra)) => RouteAction::Forward(forward(&ctx.at("route"), ra)?),
        Some(xr::route::Action::Redirect(rd)) => {
            RouteAction::Redirect(redirect(&ctx.at("redirect"), rd)?)
        }
        Some(xr::route::Action::DirectResponse(dr)) => {
            RouteAction::Direct(direct(&ctx.at("direct_response"), dr)?)
        }
        Some(xr::route::Action::FilterAction(_)) => return Err(ctx.unsupported("filter_action")),
        Some(xr::route::Action::NonForwardingAction(_)) => {
            return Err(ctx.unsupported("non_forwarding_action"));
        }
        None => return Err(ctx.missing("route")),
    };
    Ok(Route {
        name,
        matcher,
        action,
        headers,
        fault,
    })
}

fn route_match(ctx: &Ctx, m: xr::RouteMatch) -> Result<RouteMatch, ConfigError> {
    use xr::route_match::PathSpecifier as P;
    let xr::RouteMatch {
        case_sensitive,
        runtime_fraction,
        headers,
        query_parameters,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
        path_specifier,
    } = m;
    reject_set!(ctx; runtime_fraction, cookies, grpc, tls_context, dynamic_metadata, filter_state);
    let path = match path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(p),
        Some(P::Path(p)) => PathMatch::Exact(p),
        Some(P::SafeRegex(re)) => PathMatch::Regex(regex_matcher(&ctx.at("safe_regex"), re)?),
        Some(P::ConnectMatcher(_)) => return Err(ctx.unsupported("connect_matcher")),
        Some(P::PathSeparatedPrefix(_)) => return Err(ctx.unsupported("path_separated_prefix")),
        Some(P::PathMatchPolicy(_)) => return Err(ctx.unsupported("path_match_policy")),
        None => return Err(ctx.missing("prefix")),
    };
    let headers = headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(&ctx.idx("headers", i), h))
        .collect::<Result<_, _>>()?;
    let query = query_parameters
        .into_iter()
        .enumerate()
        .map(|(i, q)| query_matcher(&ctx.idx("query_parameters", i), q))
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: case_sensitive.is_none_or(|b| b.value),
        headers,
        query,
    })
}

fn forward(ctx: &Ctx, ra: xr::RouteAction) -> Result<ForwardAction, ConfigError> {
    use xr::route_action::ClusterSpecifier as C;
    use xr::route_action::HostRewriteSpecifier as H;
    let xr::RouteAction {
        cluster_not_found_response_code,
        metadata_match,
        prefix_rewrite,
        regex_rewrite,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        timeout,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy,
        retry_policy_typed_config,
        request_mirror_policies,
        priority,
        rate_limits,
        include_vh_rate_limits,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        upgrade_configs,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
        max_stream_duration,
        cluster_specifier,
        host_rewrite_specifier,
    } = ra;
    reject_set!(ctx; cluster_not_found_response_code, metadata_match, path_rewrite_policy, path_rewrite,
        append_x_forwarded_host, idle_timeout, flush_timeout, early_data_policy, retry_policy_typed_config,
        priority, rate_limits, include_vh_rate_limits, hash_policy, cors, max_grpc_timeout, grpc_timeout_offset,
        upgrade_configs, internal_redirect_policy, internal_redirect_action, max_internal_redirects,
        hedge_policy, max_stream_duration);
    let target = match cluster_specifier {
        Some(C::Cluster(c)) => ClusterTarget::Single(c),
        Some(C::WeightedClusters(w)) => weighted(&ctx.at("weighted_clusters"), w)?,
        Some(C::ClusterHeader(_)) => return Err(ctx.unsupported("cluster_header")),
        Some(C::ClusterSpecifierPlugin(_)) => {
            return Err(ctx.unsupported("cluster_specifier_plugin"));
        }
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(ctx.unsupported("inline_cluster_specifier_plugin"));
        }
        None => return Err(ctx.missing("cluster")),
    };
    let regex_rewrite = regex_rewrite
        .map(|rr| {
            let rctx = ctx.at("regex_rewrite");
            let mesh_proto::envoy::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                pattern,
                substitution,
            } = rr;
            let pattern = pattern.ok_or_else(|| rctx.missing("pattern"))?;
            let pctx = rctx.at("pattern");
            let mesh_proto::envoy::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex,
                engine_type: _re2_only,
            } = pattern;
            // RE2 writes group references as \1; the regex crate wants ${1}.
            let substitution = Regex::new(r"\\(\d)")
                .map(|re| re.replace_all(&substitution, "$${$1}").into_owned())
                .unwrap_or(substitution);
            Ok::<_, ConfigError>((sub_regex(&pctx, "regex", &regex)?, substitution))
        })
        .transpose()?;
    let host_rewrite = match host_rewrite_specifier {
        Some(H::HostRewriteLiteral(h)) => Some(h),
        Some(H::AutoHostRewrite(_)) => return Err(ctx.unsupported("auto_host_rewrite")),
        Some(H::HostRewriteHeader(_)) => return Err(ctx.unsupported("host_rewrite_header")),
        Some(_) => return Err(ctx.unsupported("host_rewrite_path_regex")),
        None => None,
    };
    let retry = retry_policy
        .map(|rp| retry(&ctx.at("retry_policy"), rp))
        .transpose()?;
    let mirrors = request_mirror_policies
        .into_iter()
        .enumerate()
        .map(|(i, m)| mirror(&ctx.idx("request_mirror_policies", i), m))
        .collect::<Result<_, _>>()?;
    Ok(ForwardAction {
        target,
        timeout: opt_duration(ctx, "timeout", timeout.as_ref())?,
        retry,
        prefix_rewrite: Some(prefix_rewrite).filter(|p| !p.is_empty()),
        regex_rewrite,
        host_rewrite,
        mirrors,
    })
}

fn weighted(ctx: &Ctx, w: xr::WeightedCluster) -> Result<ClusterTarget, ConfigError> {
    let xr::WeightedCluster {
        clusters,
        total_weight,
        runtime_key_prefix,
        random_value_specifier,
    } = w;
    // total_weight is deprecated; Envoy now uses the sum of the weights.
    let _ = total_weight;
    reject_set!(ctx; runtime_key_prefix, random_value_specifier);
    let mut out = Vec::with_capacity(clusters.len());
    for (i, cw) in clusters.into_iter().enumerate() {
        let ctx = ctx.idx("clusters", i);
        let xr::weighted_cluster::ClusterWeight {
            name,
            cluster_header,
            weight,
            metadata_match,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            typed_per_filter_config,
            host_rewrite_specifier,
        } = cw;
        reject_set!(ctx; cluster_header, metadata_match, typed_per_filter_config, host_rewrite_specifier);
        let headers = mutation(
            &ctx,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        )?;
        out.push(WeightedTarget {
            cluster: name,
            weight: weight.map_or(0, |w| w.value),
            headers,
        });
    }
    if out.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
        return Err(ctx.invalid("clusters", "weights must add up to more than 0"));
    }
    Ok(ClusterTarget::Weighted(out))
}

fn retry(ctx: &Ctx, rp: xr::RetryPolicy) -> Result<RetryPolicy, ConfigError> {
    let xr::RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retry_back_off,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    } = rp;
    reject_set!(ctx; per_try_idle_timeout, retry_priority, retry_host_predicate, retry_options_predicates,
        host_selection_retry_max_attempts, retry_back_off, rate_limited_retry_back_off, retriable_headers,
        retriable_request_headers, refresh_cluster_on_retry);
    Ok(RetryPolicy {
        retry_on,
        // Envoy's default is one retry.
        num_retries: num_retries.map_or(1, |n| n.value),
        per_try_timeout: opt_duration(ctx, "per_try_timeout", per_try_timeout.as_ref())?,
        retriable_status_codes,
    })
}

fn mirror(
    ctx: &Ctx,
    m: xr::route_action::RequestMirrorPolicy,
) -> Result<(String, f64), ConfigError> {
    let xr::route_action::RequestMirrorPolicy {
        cluster,
        cluster_header,
        runtime_fraction,
        trace_sampled,
        disable_shadow_host_suffix_append,
        request_headers_mutations,
        host_rewrite_literal,
    } = m;
    reject_set!(ctx; cluster_header, trace_sampled, disable_shadow_host_suffix_append, request_headers_mutations, host_rewrite_literal);
    let fraction = match runtime_fraction {
        None => 1.0,
        Some(xc::RuntimeFractionalPercent {
            default_value,
            runtime_key,
        }) => {
            let rctx = ctx.at("runtime_fraction");
            reject_set!(rctx; runtime_key);
            match default_value {
                None => 0.0,
                Some(p) => {
                    let denom = match p.denominator {
                        0 => 100.0,
                        1 => 10_000.0,
                        2 => 1_000_000.0,
                        d => {
                            return Err(rctx.invalid(
                                "default_value.denominator",
                                format!("unknown value {d}"),
                            ));
                        }
                    };
                    (f64::from(p.numerator) / denom).min(1.0)
                }
            }
        }
    };
    Ok((cluster, fraction))
}

fn redirect(ctx: &Ctx, r: xr::RedirectAction) -> Result<Redirect, ConfigError> {
    use xr::redirect_action::PathRewriteSpecifier as P;
    use xr::redirect_action::SchemeRewriteSpecifier as S;
    let xr::RedirectAction {
        host_redirect,
        port_redirect,
        response_code,
        strip_query,
        scheme_rewrite_specifier,
        path_rewrite_specifier,
    } = r;
    use xr::redirect_action::RedirectResponseCode as R;
    let status = match R::try_from(response_code) {
        Ok(R::MovedPermanently) => 301,
        Ok(R::Found) => 302,
        Ok(R::SeeOther) => 303,
        Ok(R::TemporaryRedirect) => 307,
        Ok(R::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ctx.invalid("response_code", format!("unknown value {response_code}")));
        }
    };
    let scheme = match scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_owned()),
        Some(S::HttpsRedirect(false)) | None => None,
        Some(S::SchemeRedirect(s)) => Some(s),
    };
    let (path, prefix_rewrite) = match path_rewrite_specifier {
        Some(P::PathRedirect(p)) => (Some(p), None),
        Some(P::PrefixRewrite(p)) => (None, Some(p)),
        Some(P::RegexRewrite(_)) => return Err(ctx.unsupported("regex_rewrite")),
        Some(P::PathRewrite(_)) => return Err(ctx.unsupported("path_rewrite")),
        None => (None, None),
    };
    Ok(Redirect {
        status,
        scheme,
        host: Some(host_redirect).filter(|h| !h.is_empty()),
        port: match port_redirect {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| ctx.invalid("port_redirect", format!("{p} is out of range")))?,
            ),
        },
        path,
        prefix_rewrite,
        strip_query,
    })
}

fn direct(ctx: &Ctx, d: xr::DirectResponseAction) -> Result<DirectResponse, ConfigError> {
    use xc::data_source::Specifier as S;
    let xr::DirectResponseAction {
        status,
        body,
        body_format,
    } = d;
    reject_set!(ctx; body_format);
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| ctx.invalid("status", format!("{status} is not an HTTP status")))?;
    let body = match body {
        None => String::new(),
        Some(xc::DataSource {
            watched_directory,
            specifier,
        }) => {
            let bctx = ctx.at("body");
            reject_set!(bctx; watched_directory);
            match specifier {
                Some(S::InlineString(s)) => s,
                Some(S::InlineBytes(b)) => {
                    String::from_utf8(b).map_err(|_| bctx.invalid("inline_bytes", "not UTF-8"))?
                }
                Some(S::Filename(_)) => return Err(bctx.unsupported("filename")),
                Some(S::EnvironmentVariable(_)) => {
                    return Err(bctx.unsupported("environment_variable"));
                }
                None => String::new(),
            }
        }
    };
    Ok(DirectResponse { status, body })
}

fn mutation(
    ctx: &Ctx,
    request_add: Vec<xc::HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<xc::HeaderValueOption>,
    response_remove: Vec<String>,
) -> Result<HeaderMutation, ConfigError> {
    let adds = |field: &str, v: Vec<xc::HeaderValueOption>| {
        v.into_iter()
            .enumerate()
            .map(|(i, h)| header_add(&ctx.idx(field, i), h))
            .collect::<Result<Vec<_>, _>>()
    };
    let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    Ok(HeaderMutation {
        request_add: adds("request_headers_to_add", request_add)?,
        request_remove: lower(request_remove),
        response_add: adds("response_headers_to_add", response_add)?,
        response_remove: lower(response_remove),
    })
}

fn header_add(ctx: &Ctx, h: xc::HeaderValueOption) -> Result<HeaderAdd, ConfigError> {
    use xc::header_value_option::HeaderAppendAction as A;
    let xc::HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = h;
    reject_set!(ctx; keep_empty_value);
    let xc::HeaderValue {
        key,
        value,
        raw_value,
    } = header.ok_or_else(|| ctx.missing("header"))?;
    let value = if raw_value.is_empty() {
        value
    } else {
        String::from_utf8(raw_value).map_err(|_| ctx.invalid("header.raw_value", "not UTF-8"))?
    };
    let name = key.to_ascii_lowercase();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
        || http::HeaderValue::from_str(&value).is_err()
    {
        return Err(ctx.invalid(
            "header",
            format!("{key:?}: {value:?} is not a valid header"),
        ));
    }
    // The deprecated `append` wins when set, as in Envoy.
    let action = match append {
        Some(wkt::BoolValue { value: true }) => AppendAction::Append,
        Some(wkt::BoolValue { value: false }) => AppendAction::Overwrite,
        None => match A::try_from(append_action) {
            Ok(A::AppendIfExistsOrAdd) => AppendAction::Append,
            Ok(A::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(A::OverwriteIfExistsOrAdd) => AppendAction::Overwrite,
            Ok(A::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(ctx.invalid("append_action", format!("unknown value {append_action}")));
            }
        },
    };
    Ok(HeaderAdd {
        name,
        value,
        action,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn route_to(prefix: &str, cluster: &str) -> xr::Route {
        xr::Route {
            r#match: Some(xr::RouteMatch {
                path_specifier: Some(xr::route_match::PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            action: Some(xr::route::Action::Route(xr::RouteAction {
                cluster_specifier: Some(xr::route_action::ClusterSpecifier::Cluster(
                    cluster.into(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    pub(crate) fn table(
        name: &str,
        domains: &[&str],
        routes: Vec<xr::Route>,
    ) -> xr::RouteConfiguration {
        xr::RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![xr::VirtualHost {
                name: format!("{}:{name}", domains[0]),
                domains: domains.iter().map(|d| d.to_string()).collect(),
                routes,
                ..Default::default()
            }],
            validate_clusters: Some(wkt::BoolValue { value: false }),
            ..Default::default()
        }
    }

    #[test]
    fn route_table_with_weights_rewrite_and_headers_converts() {
        let mut r = route_to("/api", "unused");
        let Some(xr::route::Action::Route(ra)) = &mut r.action else {
            unreachable!()
        };
        ra.cluster_specifier = Some(xr::route_action::ClusterSpecifier::WeightedClusters(
            xr::WeightedCluster {
                clusters: vec![
                    xr::weighted_cluster::ClusterWeight {
                        name: "v1".into(),
                        weight: Some(wkt::UInt32Value { value: 90 }),
                        ..Default::default()
                    },
                    xr::weighted_cluster::ClusterWeight {
                        name: "v2".into(),
                        weight: Some(wkt::UInt32Value { value: 10 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ));
        ra.prefix_rewrite = "/".into();
        ra.timeout = Some(wkt::Duration {
            seconds: 2,
            nanos: 0,
        });
        r.request_headers_to_add.push(xc::HeaderValueOption {
            header: Some(xc::HeaderValue {
                key: "X-Env".into(),
                value: "test".into(),
                raw_value: vec![],
            }),
            append_action: xc::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                as i32,
            ..Default::default()
        });
        r.response_headers_to_remove.push("Server".into());
        let rc =
            RouteConfig::try_from(table("9080", &["reviews", "reviews:9080"], vec![r])).unwrap();
        let route = &rc.virtual_hosts[0].routes[0];
        let RouteAction::Forward(f) = &route.action else {
            panic!("forward expected")
        };
        let ClusterTarget::Weighted(w) = &f.target else {
            panic!("weighted expected")
        };
        assert_eq!(
            (w[0].cluster.as_str(), w[0].weight, w[1].weight),
            ("v1", 90, 10)
        );
        assert_eq!(f.prefix_rewrite.as_deref(), Some("/"));
        assert_eq!(f.timeout, Some(Duration::from_secs(2)));
        assert_eq!(route.headers.request_add[0].name, "x-env");
        assert_eq!(route.headers.request_add[0].action, AppendAction::Overwrite);
        assert_eq!(route.headers.response_remove, ["server"]);
    }

    #[test]
    fn redirect_and_direct_response_convert() {
        let mut r1 = route_to("/old", "x");
        r1.action = Some(xr::route::Action::Redirect(xr::RedirectAction {
            host_redirect: "new.example".into(),
            path_rewrite_specifier: Some(xr::redirect_action::PathRewriteSpecifier::PathRedirect(
                "/new".into(),
            )),
            response_code: xr::redirect_action::RedirectResponseCode::Found as i32,
            ..Default::default()
        }));
        let mut r2 = route_to("/", "x");
        r2.action = Some(xr::route::Action::DirectResponse(
            xr::DirectResponseAction {
                status: 418,
                body: Some(xc::DataSource {
                    specifier: Some(xc::data_source::Specifier::InlineString("teapot".into())),
                    ..Default::default()
                }),
                body_format: None,
            },
        ));
        let rc = RouteConfig::try_from(table("80", &["*"], vec![r1, r2])).unwrap();
        let RouteAction::Redirect(rd) = &rc.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        assert_eq!(
            (rd.status, rd.host.as_deref(), rd.path.as_deref()),
            (302, Some("new.example"), Some("/new"))
        );
        let RouteAction::Direct(d) = &rc.virtual_hosts[0].routes[1].action else {
            panic!()
        };
        assert_eq!((d.status, d.body.as_str()), (418, "teapot"));
    }

    #[test]
    fn unsupported_route_fields_are_rejected_with_their_path() {
        let mut r = route_to("/", "x");
        let Some(xr::route::Action::Route(ra)) = &mut r.action else {
            unreachable!()
        };
        ra.hash_policy.push(Default::default());
        let err = RouteConfig::try_from(table("9080", &["*"], vec![r])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RouteConfiguration 9080: unsupported field virtual_hosts[0].routes[0].route.hash_policy"
        );
    }

    #[test]
    fn per_route_fault_override_is_decoded() {
        use mesh_proto::envoy::pb::envoy::extensions::filters::http::fault::v3 as xf;
        let mut r = route_to("/", "x");
        r.typed_per_filter_config.insert(
            FAULT_FILTER.into(),
            crate::config::http::tests::any(&xf::HttpFault {
                abort: Some(xf::FaultAbort {
                    error_type: Some(xf::fault_abort::ErrorType::HttpStatus(500)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let rc = RouteConfig::try_from(table("9080", &["*"], vec![r])).unwrap();
        let f = rc.virtual_hosts[0].routes[0].fault.as_ref().unwrap();
        assert_eq!(f.abort.as_ref().unwrap().status, 500);
    }
}
