//! Route actions: forward (clusters, weights, rewrites, timeout, retry,
//! mirrors), redirect and direct response.

use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use regex::Regex;
use serde::Serialize;

use super::check::{opt_duration, reject_set, sub_regex};
use super::headers::{HeaderMutation, mutation};
use super::{ConfigError, Ctx};

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

/// Retry settings (requests whose body fits the replay buffer).
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
    /// Back-off base interval (`retry_back_off.base_interval`; Envoy's
    /// default 25 ms).
    pub back_off_base: Option<Duration>,
    /// Back-off cap (`retry_back_off.max_interval`; default 10 × base).
    pub back_off_max: Option<Duration>,
}

/// Where a consistent-hash key comes from (Envoy's route `hash_policy`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum HashPolicy {
    /// A request header's value.
    Header(String),
    /// A cookie's value; when it is missing and `ttl` is set, the proxy
    /// generates one and sets it on the response.
    Cookie {
        /// Cookie name.
        name: String,
        /// Lifetime of a generated cookie (`None`: never generate).
        ttl: Option<Duration>,
        /// `Path` of a generated cookie (empty: none).
        path: String,
    },
    /// The downstream source IP.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
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
    /// Hash key sources for RING_HASH / MAGLEV clusters, with their
    /// `terminal` flag.
    pub hash_policy: Vec<(HashPolicy, bool)>,
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

pub(crate) fn forward(ctx: &Ctx, ra: xr::RouteAction) -> Result<ForwardAction, ConfigError> {
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
        priority, rate_limits, include_vh_rate_limits, cors, max_grpc_timeout, grpc_timeout_offset,
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
    let hash_policy = hash_policy
        .into_iter()
        .enumerate()
        .map(|(i, h)| hash(&ctx.idx("hash_policy", i), h))
        .collect::<Result<_, _>>()?;
    Ok(ForwardAction {
        hash_policy,
        target,
        timeout: opt_duration(ctx, "timeout", timeout.as_ref())?,
        retry,
        prefix_rewrite: Some(prefix_rewrite).filter(|p| !p.is_empty()),
        regex_rewrite,
        host_rewrite,
        mirrors,
    })
}

fn hash(ctx: &Ctx, h: xr::route_action::HashPolicy) -> Result<(HashPolicy, bool), ConfigError> {
    use xr::route_action::hash_policy as hp;
    let xr::route_action::HashPolicy {
        terminal,
        policy_specifier,
    } = h;
    let policy = match policy_specifier {
        Some(hp::PolicySpecifier::Header(hp::Header {
            header_name,
            regex_rewrite,
        })) => {
            let hctx = ctx.at("header");
            reject_set!(hctx; regex_rewrite);
            if header_name.is_empty() {
                return Err(hctx.missing("header_name"));
            }
            HashPolicy::Header(header_name.to_ascii_lowercase())
        }
        Some(hp::PolicySpecifier::Cookie(hp::Cookie {
            name,
            ttl,
            path,
            attributes,
        })) => {
            let cctx = ctx.at("cookie");
            reject_set!(cctx; attributes);
            if name.is_empty() {
                return Err(cctx.missing("name"));
            }
            HashPolicy::Cookie {
                name,
                ttl: opt_duration(&cctx, "ttl", ttl.as_ref())?,
                path,
            }
        }
        Some(hp::PolicySpecifier::ConnectionProperties(hp::ConnectionProperties { source_ip })) => {
            if !source_ip {
                return Err(ctx.invalid("connection_properties.source_ip", "must be true"));
            }
            HashPolicy::SourceIp
        }
        Some(hp::PolicySpecifier::QueryParameter(hp::QueryParameter { name })) => {
            if name.is_empty() {
                return Err(ctx.at("query_parameter").missing("name"));
            }
            HashPolicy::QueryParameter(name)
        }
        Some(hp::PolicySpecifier::FilterState(_)) => return Err(ctx.unsupported("filter_state")),
        None => return Err(ctx.missing("policy_specifier")),
    };
    Ok((policy, terminal))
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
        host_selection_retry_max_attempts, rate_limited_retry_back_off, retriable_headers,
        retriable_request_headers, refresh_cluster_on_retry);
    let (back_off_base, back_off_max) = match retry_back_off {
        None => (None, None),
        Some(b) => {
            let bctx = ctx.at("retry_back_off");
            let xr::retry_policy::RetryBackOff {
                base_interval,
                max_interval,
            } = b;
            let base = opt_duration(&bctx, "base_interval", base_interval.as_ref())?
                .ok_or_else(|| bctx.missing("base_interval"))?;
            if base.is_zero() {
                return Err(bctx.invalid("base_interval", "must be greater than 0"));
            }
            let max = opt_duration(&bctx, "max_interval", max_interval.as_ref())?;
            if max.is_some_and(|m| m < base) {
                return Err(bctx.invalid("max_interval", "must not be below base_interval"));
            }
            (Some(base), max)
        }
    };
    Ok(RetryPolicy {
        retry_on,
        // Envoy's default is one retry.
        num_retries: num_retries.map_or(1, |n| n.value),
        per_try_timeout: opt_duration(ctx, "per_try_timeout", per_try_timeout.as_ref())?,
        retriable_status_codes,
        back_off_base,
        back_off_max,
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

pub(crate) fn redirect(ctx: &Ctx, r: xr::RedirectAction) -> Result<Redirect, ConfigError> {
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

pub(crate) fn direct(
    ctx: &Ctx,
    d: xr::DirectResponseAction,
) -> Result<DirectResponse, ConfigError> {
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
