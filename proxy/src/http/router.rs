//! Route selection: virtual host by authority (Envoy's domain rules), then
//! the first route whose path, header and query matchers all hold.

use http::{HeaderMap, Method};

use crate::config::{
    AppendAction, ClusterTarget, HeaderMutation, PathMatch, Route, RouteConfig, RouteMatch,
    VirtualHost,
};

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host or `:authority`, as sent.
    pub authority: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Method.
    pub method: &'a Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

fn domain_rank(domain: &str, host: &str) -> Option<(u8, usize)> {
    // Envoy order: exact, then longest suffix wildcard, then longest
    // prefix wildcard, then "*".
    if domain == "*" {
        Some((0, 0))
    } else if let Some(suffix) = domain.strip_prefix('*') {
        (host.len() > suffix.len() && host.ends_with(suffix)).then_some((2, suffix.len()))
    } else if let Some(prefix) = domain.strip_suffix('*') {
        (host.len() > prefix.len() && host.starts_with(prefix)).then_some((1, prefix.len()))
    } else {
        (domain == host).then_some((3, domain.len()))
    }
}

/// The virtual host answering `authority`.
pub fn select_vhost<'a>(table: &'a RouteConfig, authority: &str) -> Option<&'a VirtualHost> {
    let host = authority.to_ascii_lowercase();
    table
        .virtual_hosts
        .iter()
        .filter_map(|vh| {
            vh.domains
                .iter()
                .filter_map(|d| domain_rank(d, &host))
                .max()
                .map(|r| (r, vh))
        })
        .max_by_key(|(r, _)| *r)
        .map(|(_, vh)| vh)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn path_matches(m: &RouteMatch, path: &str) -> bool {
    match &m.path {
        PathMatch::Prefix(p) => {
            if m.case_sensitive {
                path.starts_with(p.as_str())
            } else {
                path.len() >= p.len()
                    && path.is_char_boundary(p.len())
                    && path[..p.len()].eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Exact(p) => {
            if m.case_sensitive {
                path == p
            } else {
                path.eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Regex(re) => re.is_match(path),
    }
}

/// Whether a route's match holds for the request.
pub fn route_matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    if !path_matches(m, req.path) {
        return false;
    }
    let header = |name: &str| -> Option<String> {
        match name {
            ":method" => Some(req.method.as_str().to_owned()),
            ":authority" | "host" => Some(req.authority.to_owned()),
            ":path" => Some(match req.query {
                Some(q) => format!("{}?{q}", req.path),
                None => req.path.to_owned(),
            }),
            ":scheme" => Some(req.scheme.to_owned()),
            _ => {
                let values: Vec<&str> = req
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                // Envoy matches repeated headers joined with commas.
                (!values.is_empty()).then(|| values.join(","))
            }
        }
    };
    m.headers
        .iter()
        .all(|h| h.matches(header(&h.name).as_deref()))
        && m.query
            .iter()
            .all(|q| q.matches(query_param(req.query, &q.name)))
}

/// The first matching route of the virtual host.
pub fn select_route<'a>(vh: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    vh.routes.iter().find(|r| route_matches(&r.matcher, req))
}

/// Picks a cluster of the target with `roll` uniformly drawn in
/// `0..total weight` (a single cluster ignores it). Returns the cluster and
/// the header changes specific to that pick.
pub fn pick_cluster(
    target: &ClusterTarget,
    roll: impl FnOnce(u64) -> u64,
) -> (&str, Option<&HeaderMutation>) {
    match target {
        ClusterTarget::Single(c) => (c, None),
        ClusterTarget::Weighted(ws) => {
            let total: u64 = ws.iter().map(|w| u64::from(w.weight)).sum();
            let mut n = roll(total.max(1));
            for w in ws {
                if n < u64::from(w.weight) {
                    return (&w.cluster, Some(&w.headers));
                }
                n -= u64::from(w.weight);
            }
            // Weights sum to more than zero (checked at conversion), so
            // the loop returns; this keeps the function total.
            let last = &ws[ws.len() - 1];
            (&last.cluster, Some(&last.headers))
        }
    }
}

/// Applies additions (in order) to a header map.
pub fn apply_adds(headers: &mut HeaderMap, adds: &[crate::config::HeaderAdd]) {
    for a in adds {
        // Names and values were validated when the config was converted.
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(a.name.as_bytes()),
            http::HeaderValue::from_str(&a.value),
        ) else {
            continue;
        };
        match a.action {
            AppendAction::Append => {
                headers.append(name, value);
            }
            AppendAction::AddIfAbsent => {
                if !headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            AppendAction::Overwrite => {
                headers.insert(name, value);
            }
            AppendAction::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

/// Applies removals to a header map.
pub fn apply_removes(headers: &mut HeaderMap, removes: &[String]) {
    for r in removes {
        headers.remove(r.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        CasedMatch, DirectResponse, HeaderMatch, HeaderMatchKind, QueryMatch, RouteAction,
        StringMatch,
    };

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![],
            headers: Default::default(),
        }
    }

    fn route(path: PathMatch, headers: Vec<HeaderMatch>, query: Vec<QueryMatch>) -> Route {
        Route {
            name: String::new(),
            matcher: RouteMatch {
                path,
                case_sensitive: true,
                headers,
                query,
            },
            action: RouteAction::Direct(DirectResponse {
                status: 200,
                body: String::new(),
            }),
            headers: Default::default(),
            fault: None,
        }
    }

    fn view<'a>(
        path: &'a str,
        query: Option<&'a str>,
        method: &'a Method,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            authority: "reviews:9080",
            path,
            query,
            method,
            scheme: "http",
            headers,
        }
    }

    #[test]
    fn vhost_selection_prefers_exact_then_suffix_then_prefix_then_star() {
        let table = RouteConfig {
            name: "80".into(),
            virtual_hosts: vec![
                vh("star", &["*"]),
                vh("prefix", &["reviews*"]),
                vh("suffix", &["*.svc.cluster.local"]),
                vh(
                    "exact",
                    &["reviews.default.svc.cluster.local", "reviews:9080"],
                ),
            ],
            headers: Default::default(),
        };
        assert_eq!(select_vhost(&table, "Reviews:9080").unwrap().name, "exact");
        assert_eq!(
            select_vhost(&table, "ratings.default.svc.cluster.local")
                .unwrap()
                .name,
            "suffix"
        );
        assert_eq!(
            select_vhost(&table, "reviews.other").unwrap().name,
            "prefix"
        );
        assert_eq!(select_vhost(&table, "example.com").unwrap().name, "star");
    }

    #[test]
    fn path_header_method_and_query_matchers_all_apply() {
        let exact = |s: &str| CasedMatch {
            pattern: StringMatch::Exact(s.into()),
            ignore_case: false,
        };
        let r = route(
            PathMatch::Prefix("/api".into()),
            vec![
                HeaderMatch {
                    name: "end-user".into(),
                    kind: HeaderMatchKind::Value(exact("jason")),
                    invert: false,
                },
                HeaderMatch {
                    name: ":method".into(),
                    kind: HeaderMatchKind::Value(exact("GET")),
                    invert: false,
                },
            ],
            vec![QueryMatch {
                name: "v".into(),
                value: Some(exact("2")),
            }],
        );
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        let get = Method::GET;
        assert!(route_matches(
            &r.matcher,
            &view("/api/x", Some("a=1&v=2"), &get, &h)
        ));
        assert!(!route_matches(
            &r.matcher,
            &view("/api/x", Some("v=3"), &get, &h)
        ));
        assert!(!route_matches(
            &r.matcher,
            &view("/other", Some("v=2"), &get, &h)
        ));
        assert!(!route_matches(
            &r.matcher,
            &view("/api", Some("v=2"), &Method::POST, &h)
        ));
        assert!(!route_matches(
            &r.matcher,
            &view("/api", Some("v=2"), &get, &HeaderMap::new())
        ));
    }

    #[test]
    fn exact_and_regex_paths_match_the_whole_path() {
        let ctx_re = regex::Regex::new("^(?:/v[0-9]+/.*)$").unwrap();
        let h = HeaderMap::new();
        let get = Method::GET;
        let r = route(PathMatch::Exact("/login".into()), vec![], vec![]);
        assert!(route_matches(&r.matcher, &view("/login", None, &get, &h)));
        assert!(!route_matches(
            &r.matcher,
            &view("/login/x", None, &get, &h)
        ));
        let r = route(PathMatch::Regex(ctx_re), vec![], vec![]);
        assert!(route_matches(
            &r.matcher,
            &view("/v2/items", None, &get, &h)
        ));
        assert!(!route_matches(
            &r.matcher,
            &view("/x/v2/items", None, &get, &h)
        ));
    }

    #[test]
    fn weighted_pick_follows_the_roll() {
        let t = ClusterTarget::Weighted(vec![
            crate::config::WeightedTarget {
                cluster: "v1".into(),
                weight: 90,
                headers: Default::default(),
            },
            crate::config::WeightedTarget {
                cluster: "v2".into(),
                weight: 10,
                headers: Default::default(),
            },
        ]);
        assert_eq!(pick_cluster(&t, |_| 0).0, "v1");
        assert_eq!(pick_cluster(&t, |_| 89).0, "v1");
        assert_eq!(pick_cluster(&t, |_| 90).0, "v2");
        assert_eq!(pick_cluster(&t, |_| 99).0, "v2");
    }
}
