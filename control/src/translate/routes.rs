//! RDS: one `RouteConfiguration` per HTTP port (named by the port), one
//! virtual host per service on it, routes from the VirtualService then a
//! default route. Explicit-mode proxies get one more, `explicit`, with every
//! HTTP service on every port, routed by `Host`.

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::common::StringMatch;
use mesh_model::naming;
use mesh_model::networking::{
    ConsistentHashLb, Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest,
    HttpRoute, VirtualServiceSpec,
};
use mesh_model::{Object, host};
use mesh_proto::envoy::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use mesh_proto::envoy::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route, route_action, route_action::HashPolicy,
    route_action::RequestMirrorPolicy, route_action::hash_policy, route_match,
    weighted_cluster::ClusterWeight,
};
use mesh_proto::envoy::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay,
};
use mesh_proto::envoy::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use mesh_proto::envoy::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use mesh_proto::envoy::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use mesh_proto::envoy::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};

use super::{Context, Generated, istio_duration, pack};
use crate::node::Interception;
use crate::registry::{CLUSTER_DOMAIN, Service};

/// Name of the explicit-mode route configuration.
pub const EXPLICIT_ROUTE_CONFIG: &str = "explicit";

/// Every route configuration of a proxy.
pub fn route_configs(ctx: &Context<'_>) -> BTreeMap<String, Generated> {
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for s in &ctx.services {
        ports.extend(
            s.ports
                .iter()
                .filter(|p| p.protocol.is_http())
                .map(|p| p.number),
        );
    }
    let mut out = BTreeMap::new();
    for port in ports {
        let name = naming::route_config_name(port);
        let mut used = BTreeSet::new();
        let vhosts = ctx
            .services
            .iter()
            .filter(|s| {
                s.ports
                    .iter()
                    .any(|p| p.number == port && p.protocol.is_http())
            })
            .map(|s| virtual_host(ctx, s, port, &mut used, true))
            .collect();
        out.insert(name.clone(), pack(&route_config(name, vhosts)));
    }
    if ctx.proxy.interception == Interception::None {
        let mut used = BTreeSet::new();
        let mut vhosts = Vec::new();
        for s in &ctx.services {
            let mut first = true;
            for p in s.ports.iter().filter(|p| p.protocol.is_http()) {
                vhosts.push(virtual_host(ctx, s, p.number, &mut used, first));
                first = false;
            }
        }
        let name = EXPLICIT_ROUTE_CONFIG.to_string();
        out.insert(name.clone(), pack(&route_config(name, vhosts)));
    }
    out
}

fn route_config(name: String, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Domains a service answers to on a port; `bare` adds the names without a
/// port. Envoy rejects a domain used twice in one route configuration, so
/// names already taken (`used`) are skipped.
fn domains(
    ctx: &Context<'_>,
    s: &Service,
    port: u32,
    used: &mut BTreeSet<String>,
    bare: bool,
) -> Vec<String> {
    let short = s.short_name();
    let mut names = vec![s.host.clone(), s.vip.to_string()];
    names.push(format!("{short}.{}", s.namespace));
    // Short names resolve in the proxy's namespace only (as in Kubernetes DNS).
    if s.namespace == ctx.proxy.namespace {
        names.push(short.to_string());
    }
    let mut out = Vec::new();
    for n in names {
        let with_port = format!("{n}:{port}");
        for d in [bare.then_some(n.clone()), Some(with_port)]
            .into_iter()
            .flatten()
        {
            if used.insert(d.clone()) {
                out.push(d);
            }
        }
    }
    out
}

fn virtual_host(
    ctx: &Context<'_>,
    s: &Service,
    port: u32,
    used: &mut BTreeSet<String>,
    bare: bool,
) -> VirtualHost {
    let mut routes = Vec::new();
    if let Some(vs) = ctx.virtual_services.get(&s.host) {
        for (i, r) in vs.spec.http.iter().enumerate() {
            routes.extend(http_route(ctx, vs, r, i, port, s));
        }
    }
    routes.push(Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                naming::outbound_cluster_name(port, None, &s.host),
            )),
            timeout: Some(PbDuration::default()),
            hash_policy: hash_policy(ctx, &s.host, None, port),
            ..Default::default()
        })),
        ..Default::default()
    });
    VirtualHost {
        name: format!("{}:{port}", s.host),
        domains: domains(ctx, s, port, used, bare),
        routes,
        ..Default::default()
    }
}

/// One Envoy route per `match` entry (Istio's rule: the entries are ORed).
fn http_route(
    ctx: &Context<'_>,
    vs: &Object<VirtualServiceSpec>,
    r: &HttpRoute,
    index: usize,
    port: u32,
    svc: &Service,
) -> Vec<Route> {
    let default_match = [HttpMatchRequest::default()];
    let matches: &[HttpMatchRequest] = if r.matches.is_empty() {
        &default_match
    } else {
        &r.matches
    };
    let ns = vs.metadata.namespace_or_default();
    let action = action(ctx, ns, r, port, svc);
    let mut per_filter = std::collections::HashMap::new();
    if let Some(f) = &r.fault {
        per_filter.insert("envoy.filters.http.fault".to_string(), pack(&fault(f)).any);
    }
    let (req_add, req_remove) = header_ops(r.headers.as_ref().and_then(|h| h.request.as_ref()));
    let (resp_add, resp_remove) = header_ops(r.headers.as_ref().and_then(|h| h.response.as_ref()));
    matches
        .iter()
        .filter(|m| m.port.is_none_or(|p| p == port))
        .map(|m| Route {
            name: r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{index}", vs.metadata.name)),
            r#match: Some(route_match(m)),
            action: Some(action.clone()),
            typed_per_filter_config: per_filter.clone(),
            request_headers_to_add: req_add.clone(),
            request_headers_to_remove: req_remove.clone(),
            response_headers_to_add: resp_add.clone(),
            response_headers_to_remove: resp_remove.clone(),
            ..Default::default()
        })
        .collect()
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    let pattern = if let Some(e) = &m.exact {
        string_matcher::MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        string_matcher::MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        string_matcher::MatchPattern::SafeRegex(regex(r))
    } else {
        string_matcher::MatchPattern::Prefix(String::new())
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let spec = if m.exact.is_none() && m.prefix.is_none() && m.regex.is_none() {
        HeaderMatchSpecifier::PresentMatch(true)
    } else {
        HeaderMatchSpecifier::StringMatch(string_matcher(m))
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path = match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => route_match::PathSpecifier::Path(e.clone()),
        Some(StringMatch {
            prefix: Some(p), ..
        }) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => route_match::PathSpecifier::SafeRegex(regex(r)),
        _ => route_match::PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> =
        m.headers.iter().map(|(k, v)| header(k, v, false)).collect();
    headers.extend(m.without_headers.iter().map(|(k, v)| header(k, v, true)));
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header(name, sm, false));
        }
    }
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_uri_case.map(|i| BoolValue { value: !i }),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(k, v)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(v),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

/// The cluster a destination names: its port if given, else the port being
/// routed when the service has it, else the service's only port.
fn cluster_for(ctx: &Context<'_>, ns: &str, d: &Destination, port: u32) -> String {
    let h = host::fqdn(&d.host, ns, CLUSTER_DOMAIN);
    let p = d
        .port
        .as_ref()
        .map(|p| p.number)
        .unwrap_or_else(|| match ctx.service(&h) {
            Some(s) if !s.ports.iter().any(|x| x.number == port) && s.ports.len() == 1 => {
                s.ports[0].number
            }
            _ => port,
        });
    naming::outbound_cluster_name(p, d.subset.as_deref(), &h)
}

fn percent(v: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (v.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn action(ctx: &Context<'_>, ns: &str, r: &HttpRoute, port: u32, _svc: &Service) -> route::Action {
    if let Some(rd) = &r.redirect {
        let code = match rd.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        };
        return route::Action::Redirect(RedirectAction {
            host_redirect: rd.authority.clone().unwrap_or_default(),
            port_redirect: rd.port.unwrap_or(0),
            response_code: code as i32,
            scheme_rewrite_specifier: rd
                .scheme
                .clone()
                .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: rd
                .uri
                .clone()
                .map(redirect_action::PathRewriteSpecifier::PathRedirect),
            ..Default::default()
        });
    }
    if let Some(dr) = &r.direct_response {
        return route::Action::DirectResponse(DirectResponseAction {
            status: dr.status,
            body: dr
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .map(|s| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(s)),
                    ..Default::default()
                }),
            ..Default::default()
        });
    }
    let specifier = match r.route.as_slice() {
        [one] => {
            route_action::ClusterSpecifier::Cluster(cluster_for(ctx, ns, &one.destination, port))
        }
        many => {
            let all_unweighted = many.iter().all(|d| d.weight.is_none());
            route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: many
                    .iter()
                    .map(|d| ClusterWeight {
                        name: cluster_for(ctx, ns, &d.destination, port),
                        weight: Some(UInt32Value {
                            value: if all_unweighted {
                                1
                            } else {
                                d.weight.unwrap_or(0).max(0) as u32
                            },
                        }),
                        ..Default::default()
                    })
                    .filter(|c| c.weight.is_some_and(|w| w.value > 0))
                    .collect(),
                ..Default::default()
            })
        }
    };
    let mut mirrors: Vec<RequestMirrorPolicy> = Vec::new();
    if let Some(m) = &r.mirror {
        mirrors.push(RequestMirrorPolicy {
            cluster: cluster_for(ctx, ns, m, port),
            runtime_fraction: r
                .mirror_percentage
                .as_ref()
                .map(|p| RuntimeFractionalPercent {
                    default_value: Some(percent(p.value)),
                    ..Default::default()
                }),
            ..Default::default()
        });
    }
    for m in &r.mirrors {
        mirrors.push(RequestMirrorPolicy {
            cluster: cluster_for(ctx, ns, &m.destination, port),
            runtime_fraction: m.percentage.as_ref().map(|p| RuntimeFractionalPercent {
                default_value: Some(percent(p.value)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let rewrite = r.rewrite.as_ref();
    // Consistent hashing when every destination's DestinationRule asks for
    // the same key (a weighted split over differently hashed subsets gets
    // none, as the key could not be honoured by all).
    let hashes: Vec<Vec<HashPolicy>> = r
        .route
        .iter()
        .map(|d| {
            let h = host::fqdn(&d.destination.host, ns, CLUSTER_DOMAIN);
            let p = d.destination.port.as_ref().map_or(port, |p| p.number);
            hash_policy(ctx, &h, d.destination.subset.as_deref(), p)
        })
        .collect();
    let hash_policy = match hashes.split_first() {
        Some((first, rest)) if rest.iter().all(|h| h == first) => first.clone(),
        _ => Vec::new(),
    };
    let (retry_on, retriable_status_codes) = r
        .retries
        .as_ref()
        .map(|x| retry_conditions(x.retry_on.as_deref()))
        .unwrap_or_default();
    route::Action::Route(RouteAction {
        hash_policy,
        cluster_specifier: Some(specifier),
        // Istio disables Envoy's 15 s default: no timeout unless asked.
        timeout: Some(istio_duration(r.timeout.as_ref()).unwrap_or_default()),
        retry_policy: r
            .retries
            .as_ref()
            .filter(|x| x.attempts > 0)
            .map(|x| RetryPolicy {
                retry_on,
                retriable_status_codes,
                num_retries: Some(UInt32Value {
                    value: x.attempts as u32,
                }),
                per_try_timeout: istio_duration(x.per_try_timeout.as_ref()),
                ..Default::default()
            }),
        prefix_rewrite: rewrite.and_then(|w| w.uri.clone()).unwrap_or_default(),
        regex_rewrite: rewrite
            .and_then(|w| w.uri_regex_rewrite.as_ref())
            .map(|rr| RegexMatchAndSubstitute {
                pattern: Some(regex(&rr.matches)),
                substitution: rr.rewrite.clone(),
            }),
        host_rewrite_specifier: rewrite
            .and_then(|w| w.authority.clone())
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        request_mirror_policies: mirrors,
        ..Default::default()
    })
}

/// Istio's `retryOn`: Envoy conditions, plus HTTP status codes that become
/// `retriable_status_codes` under `retriable-status-codes`. Unset: Istio's
/// default conditions, with 503 as the retriable status.
fn retry_conditions(retry_on: Option<&str>) -> (String, Vec<u32>) {
    const DEFAULT: &str =
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
    let Some(on) = retry_on.filter(|s| !s.trim().is_empty()) else {
        return (DEFAULT.into(), vec![503]);
    };
    let mut conditions: Vec<String> = Vec::new();
    let mut codes = Vec::new();
    for c in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match c.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(c.to_string()),
        }
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".into());
    }
    (conditions.join(","), codes)
}

/// The route `hash_policy` for traffic to `host` (subset, port) from its
/// DestinationRule's `loadBalancer.consistentHash` (port-level settings
/// first, then the subset's policy, then the top-level one).
fn hash_policy(ctx: &Context<'_>, host: &str, subset: Option<&str>, port: u32) -> Vec<HashPolicy> {
    let Some(dr) = ctx.destination_rules.get(host) else {
        return Vec::new();
    };
    let top = dr.spec.traffic_policy.as_ref();
    let policy = subset
        .and_then(|n| dr.spec.subsets.iter().find(|s| s.name == n))
        .and_then(|s| s.traffic_policy.as_ref())
        .or(top);
    let lb = policy.and_then(|p| {
        p.port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|x| x.number == port))
            .and_then(|s| s.load_balancer.as_ref())
            .or(p.load_balancer.as_ref())
    });
    lb.and_then(|l| l.consistent_hash.as_ref())
        .and_then(consistent_hash)
        .into_iter()
        .collect()
}

fn consistent_hash(ch: &ConsistentHashLb) -> Option<HashPolicy> {
    use hash_policy::PolicySpecifier as P;
    let spec = if let Some(h) = &ch.http_header_name {
        P::Header(hash_policy::Header {
            header_name: h.clone(),
            regex_rewrite: None,
        })
    } else if let Some(c) = &ch.http_cookie {
        P::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            ttl: istio_duration(c.ttl.as_ref()),
            path: c.path.clone().unwrap_or_default(),
            attributes: Vec::new(),
        })
    } else if ch.use_source_ip == Some(true) {
        P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        P::QueryParameter(hash_policy::QueryParameter { name: q.clone() })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    })
}

fn fault(f: &HttpFaultInjection) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            percentage: Some(percent(
                d.percentage
                    .as_ref()
                    .map(|p| p.value)
                    .or(d.percent.map(f64::from))
                    .unwrap_or(100.0),
            )),
            fault_delay_secifier: istio_duration(d.fixed_delay.as_ref())
                .map(fault_delay::FaultDelaySecifier::FixedDelay),
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            percentage: Some(percent(
                a.percentage.as_ref().map(|p| p.value).unwrap_or(100.0),
            )),
            error_type: a
                .http_status
                .map(|s| fault_abort::ErrorType::HttpStatus(s.max(0) as u32)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let mut add = Vec::new();
    for (map, action) in [
        (&ops.set, HeaderAppendAction::OverwriteIfExistsOrAdd),
        (&ops.add, HeaderAppendAction::AppendIfExistsOrAdd),
    ] {
        for (k, v) in map {
            add.push(HeaderValueOption {
                header: Some(HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            });
        }
    }
    (add, ops.remove.clone())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{proxy, snapshot};
    use super::super::{ROUTE_TYPE, generate};
    use super::*;
    use prost::Message;

    const YAML: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - match: [{headers: {x-canary: {exact: 'yes'}}}]
    route: [{destination: {host: backend, subset: v2}}]
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v1/api}
    retries: {attempts: 3, perTryTimeout: 2s}
    timeout: 5s
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
    route:
    - {destination: {host: backend, subset: v1}, weight: 80}
    - {destination: {host: backend, subset: v2}, weight: 20}
";

    fn config(cfg: &super::super::ProxyConfig, name: &str) -> RouteConfiguration {
        RouteConfiguration::decode(cfg[ROUTE_TYPE][name].any.value.as_slice()).unwrap()
    }

    #[tokio::test]
    async fn virtual_service_becomes_ordered_routes_then_default() {
        let snap = snapshot(YAML).await;
        let cfg = generate(&snap, &proxy());
        let rc = config(&cfg, "80");
        let vh = &rc.virtual_hosts[0];
        let h = "backend.default.svc.cluster.local";
        assert_eq!(vh.name, format!("{h}:80"));
        assert!(vh.domains.contains(&"backend".to_string()));
        assert!(vh.domains.contains(&format!("{h}:80")));
        assert_eq!(vh.routes.len(), 3);
        let Some(route::Action::Route(canary)) = &vh.routes[0].action else {
            panic!()
        };
        assert_eq!(
            canary.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster(format!(
                "outbound|80|v2|{h}"
            )))
        );
        assert_eq!(
            vh.routes[0].r#match.as_ref().unwrap().headers[0].name,
            "x-canary"
        );
        let Some(route::Action::Route(split)) = &vh.routes[1].action else {
            panic!()
        };
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &split.cluster_specifier
        else {
            panic!()
        };
        let weights: Vec<u32> = w.clusters.iter().map(|c| c.weight.unwrap().value).collect();
        assert_eq!(weights, vec![80, 20]);
        assert_eq!(split.prefix_rewrite, "/v1/api");
        assert_eq!(split.timeout.unwrap().seconds, 5);
        assert_eq!(
            split
                .retry_policy
                .as_ref()
                .unwrap()
                .num_retries
                .unwrap()
                .value,
            3
        );
        assert!(
            vh.routes[1]
                .typed_per_filter_config
                .contains_key("envoy.filters.http.fault")
        );
        assert_eq!(vh.routes[2].name, "default");
    }

    #[tokio::test]
    async fn explicit_mode_gets_one_host_routed_config_without_duplicate_domains() {
        let yaml = format!(
            "{YAML}---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: two}}\nspec: {{hosts: [two], ports: [{{number: 80, name: http}}, {{number: 81, name: http-alt}}]}}\n"
        );
        let snap = snapshot(&yaml).await;
        let mut p = proxy();
        p.interception = Interception::None;
        p.outbound_port = Some(15001);
        let cfg = generate(&snap, &p);
        let rc = config(&cfg, EXPLICIT_ROUTE_CONFIG);
        let mut all: Vec<&String> = rc.virtual_hosts.iter().flat_map(|v| &v.domains).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate domains would be NACKed");
        assert!(all.iter().any(|d| *d == "two:81"));
        assert!(all.iter().any(|d| *d == "two"));
    }

    const HASHED: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend]
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: sticky, ttl: 60s, path: /}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: u}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - match: [{uri: {prefix: /v2}}]
    retries: {attempts: 2, retryOn: '503,reset'}
    route: [{destination: {host: backend, subset: v2}}]
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: backend, subset: v1}, weight: 50}
    - {destination: {host: backend, subset: v2}, weight: 50}
";

    fn forward(rc: &RouteConfiguration, name: &str) -> RouteAction {
        let r = rc.virtual_hosts[0]
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}"));
        let Some(route::Action::Route(ra)) = &r.action else {
            panic!("{name} forwards")
        };
        ra.clone()
    }

    #[tokio::test]
    async fn consistent_hash_becomes_the_route_hash_policy_and_status_codes_retriable() {
        use hash_policy::PolicySpecifier as P;
        let snap = snapshot(HASHED).await;
        let cfg = generate(&snap, &proxy());
        let rc = config(&cfg, "80");
        let default = forward(&rc, "default");
        let Some(P::Cookie(c)) = &default.hash_policy[0].policy_specifier else {
            panic!("cookie hash expected: {:?}", default.hash_policy)
        };
        assert_eq!((c.name.as_str(), c.path.as_str()), ("sticky", "/"));
        assert_eq!(c.ttl.unwrap().seconds, 60);
        let v2 = forward(&rc, "backend.0");
        let Some(P::QueryParameter(q)) = &v2.hash_policy[0].policy_specifier else {
            panic!("query hash expected")
        };
        assert_eq!(q.name, "u");
        let retry = v2.retry_policy.unwrap();
        assert_eq!(retry.retry_on, "reset,retriable-status-codes");
        assert_eq!(retry.retriable_status_codes, vec![503]);
        // v1 (cookie) and v2 (query) disagree: a split gets no hash policy.
        assert!(forward(&rc, "backend.1").hash_policy.is_empty());
    }

    #[test]
    fn retry_on_defaults_to_istios_conditions_with_503_retriable() {
        let (on, codes) = retry_conditions(None);
        assert_eq!(
            on,
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        );
        assert_eq!(codes, vec![503]);
        assert_eq!(retry_conditions(Some("5xx")), ("5xx".to_string(), vec![]));
    }
}
