//! Route tables (RDS `RouteConfiguration`): virtual hosts, routes, matches
//! and actions.

use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use regex::Regex;
use serde::Serialize;

use super::action::{DirectResponse, ForwardAction, Redirect, direct, forward, redirect};
use super::check::{decode_any, reject_set};
use super::headers::{HeaderMutation, mutation};
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{AppendAction, ClusterTarget};
    use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
    use mesh_proto::envoy::pb::google::protobuf as wkt;
    use std::time::Duration;

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
        ra.max_internal_redirects = Some(Default::default());
        let err = RouteConfig::try_from(table("9080", &["*"], vec![r])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RouteConfiguration 9080: unsupported field virtual_hosts[0].routes[0].route.max_internal_redirects"
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
