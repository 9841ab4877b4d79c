//! istioctl-style tables of a config dump's listeners, routes, clusters,
//! endpoints and bootstrap (secrets are in [`super::secret`]).

use serde_json::Value;

use super::dump::{Dump, arr, field, num, str_field};

/// Column-aligned text: a header row, then rows, three spaces apart.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let mut out = String::new();
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&head).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// istioctl's filter flags; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `--port`: a cluster's, listener's or endpoint's port.
    pub port: Option<u32>,
    /// `--fqdn`: a cluster's service FQDN.
    pub fqdn: Option<String>,
    /// `--subset`: a cluster's subset.
    pub subset: Option<String>,
    /// `--direction`: `inbound` or `outbound`.
    pub direction: Option<String>,
    /// `--cluster`: the cluster of endpoints.
    pub cluster: Option<String>,
    /// `--name`: a route configuration's or secret's name.
    pub name: Option<String>,
}

fn matches<T: PartialEq + ?Sized>(want: Option<&T>, have: &T) -> bool {
    want.is_none_or(|w| w == have)
}

/// The parts of an Istio cluster name `direction|port|subset|fqdn`.
#[derive(Debug, Default, PartialEq)]
pub struct ClusterName {
    /// `outbound`, `inbound` or empty for other names.
    pub direction: String,
    /// The port, if the name carries one.
    pub port: Option<u32>,
    /// The subset, empty for none.
    pub subset: String,
    /// The service FQDN (the whole name when not in Istio's form).
    pub fqdn: String,
}

/// Splits an Istio cluster name; other names become their own FQDN.
pub fn parse_cluster_name(name: &str) -> ClusterName {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [dir, port, subset, fqdn] if matches!(*dir, "inbound" | "outbound") => ClusterName {
            direction: dir.to_string(),
            port: port.parse().ok(),
            subset: subset.to_string(),
            fqdn: fqdn.to_string(),
        },
        _ => ClusterName {
            fqdn: name.to_string(),
            ..Default::default()
        },
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// `name.namespace` of the Istio resource in `metadata.filter_metadata.istio.config`
/// (`/apis/<group>/<version>/namespaces/<ns>/<kind>/<name>`), if any.
fn istio_config(obj: &Value) -> Option<String> {
    let path =
        field(field(field(obj, "metadata"), "filter_metadata"), "istio")["config"].as_str()?;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., "namespaces", ns, _kind, name] => Some(format!("{name}.{ns}")),
        _ => None,
    }
}

/// `SERVICE FQDN  PORT  SUBSET  DIRECTION  TYPE  DESTINATION RULE`.
pub fn clusters(dump: &Dump, f: &Filter) -> String {
    let mut rows = Vec::new();
    for c in dump.clusters() {
        let name = str_field(&c, "name");
        let n = parse_cluster_name(name);
        if !matches(f.fqdn.as_deref(), n.fqdn.as_str())
            || !matches(f.subset.as_deref(), n.subset.as_str())
            || !matches(f.direction.as_deref(), n.direction.as_str())
            || f.port.is_some_and(|p| n.port != Some(p))
        {
            continue;
        }
        let ty = match str_field(&c, "type") {
            "" if !field(&c, "cluster_type").is_null() => {
                str_field(field(&c, "cluster_type"), "name").to_string()
            }
            // STATIC is the enum's zero value, which proto3 JSON leaves out.
            "" => "STATIC".to_string(),
            t => t.to_string(),
        };
        rows.push(vec![
            n.fqdn.clone(),
            n.port.map_or("-".into(), |p| p.to_string()),
            dash(&n.subset),
            dash(&n.direction),
            ty,
            istio_config(&c).unwrap_or_else(|| "-".into()),
        ]);
    }
    render(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE",
        ],
        &rows,
    )
}

fn socket(addr: &Value) -> (String, Option<u64>) {
    let s = field(addr, "socket_address");
    (str_field(s, "address").to_string(), num(s, "port_value"))
}

fn describe_match(m: &Value) -> String {
    let mut conds = Vec::new();
    let names: Vec<&str> = arr(m, "server_names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !names.is_empty() {
        conds.push(format!("SNI: {}", names.join(",")));
    }
    let trans = str_field(m, "transport_protocol");
    if !trans.is_empty() {
        conds.push(format!("Trans: {trans}"));
    }
    let apps: Vec<&str> = arr(m, "application_protocols")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !apps.is_empty() {
        conds.push(format!("App: {}", apps.join(",")));
    }
    let prefixes: Vec<String> = arr(m, "prefix_ranges")
        .iter()
        .map(|p| {
            let a = str_field(p, "address_prefix");
            match num(p, "prefix_len") {
                Some(l) => format!("{a}/{l}"),
                None => a.to_string(),
            }
        })
        .collect();
    match (prefixes.is_empty(), num(m, "destination_port")) {
        (true, None) => {}
        (true, Some(p)) => conds.push(format!("Addr: *:{p}")),
        (false, None) => conds.push(format!("Addr: {}", prefixes.join(","))),
        (false, Some(p)) => conds.push(format!("Addr: {}:{p}", prefixes.join(","))),
    }
    if conds.is_empty() {
        "ALL".into()
    } else {
        conds.join("; ")
    }
}

fn describe_filters(chain: &Value) -> String {
    for filter in arr(chain, "filters") {
        let cfg = field(filter, "typed_config");
        let ty = cfg["@type"].as_str().unwrap_or("");
        if ty.ends_with(".HttpConnectionManager") {
            let rds = field(field(cfg, "rds"), "route_config_name");
            if let Some(r) = rds.as_str() {
                return format!("Route: {r}");
            }
            let inline = field(cfg, "route_config");
            return format!("Inline Route: {}", dash(str_field(inline, "name")));
        }
        if ty.ends_with(".TcpProxy") {
            let cluster = str_field(cfg, "cluster");
            if !cluster.is_empty() {
                return format!("Cluster: {cluster}");
            }
            let weighted: Vec<&str> = arr(field(cfg, "weighted_clusters"), "clusters")
                .iter()
                .map(|c| str_field(c, "name"))
                .collect();
            return format!("WeightedCluster: {}", weighted.join(","));
        }
    }
    "Non-HTTP/Non-TCP".into()
}

/// `ADDRESSES  PORT  MATCH  DESTINATION`: one row per filter chain.
pub fn listeners(dump: &Dump, f: &Filter) -> String {
    let mut rows = Vec::new();
    for l in dump.listeners() {
        let (addr, port) = socket(field(&l, "address"));
        let mut addrs = vec![addr];
        for a in arr(&l, "additional_addresses") {
            addrs.push(socket(field(a, "address")).0);
        }
        let chains = arr(&l, "filter_chains")
            .iter()
            .map(|c| (c, describe_match(field(c, "filter_chain_match"))))
            .chain(
                Some(field(&l, "default_filter_chain"))
                    .filter(|d| !d.is_null())
                    .map(|d| (d, "ALL".to_string())),
            );
        for (chain, m) in chains {
            let chain_port = num(field(chain, "filter_chain_match"), "destination_port");
            if let Some(want) = f.port {
                let want = u64::from(want);
                if port != Some(want) && chain_port != Some(want) {
                    continue;
                }
            }
            rows.push(vec![
                addrs.join(","),
                port.map_or("-".into(), |p| p.to_string()),
                m,
                describe_filters(chain),
            ]);
        }
    }
    render(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"], &rows)
}

fn describe_domains(domains: &[Value]) -> String {
    let mut names: Vec<&str> = domains
        .iter()
        .filter_map(Value::as_str)
        .filter(|d| {
            d.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        })
        .collect();
    if names.is_empty() {
        names = domains.iter().filter_map(Value::as_str).collect();
    }
    // Names before addresses, short before long: what a person types.
    names.sort_by_key(|d| (d.parse::<std::net::IpAddr>().is_ok(), d.len(), *d));
    names.dedup();
    match names.len() {
        0 => "-".into(),
        1 | 2 => names.join(", "),
        n => format!("{} + {} more...", names[..2].join(", "), n - 2),
    }
}

fn describe_route_match(m: &Value) -> String {
    let path = if let Some(p) = field(m, "prefix").as_str() {
        format!("{p}*")
    } else if let Some(p) = field(m, "path").as_str() {
        p.to_string()
    } else if let Some(p) = field(m, "path_separated_prefix").as_str() {
        format!("{p}/*")
    } else if let Some(r) = field(field(m, "safe_regex"), "regex").as_str() {
        r.to_string()
    } else {
        "/*".to_string()
    };
    let headers = arr(m, "headers").len();
    match headers {
        0 => path,
        1 => format!("{path} (+1 header)"),
        n => format!("{path} (+{n} headers)"),
    }
}

/// The VirtualService a route came from: Istio's metadata, else meshd's
/// `<virtualservice>.<index>` route name.
fn route_source(route: &Value) -> String {
    if let Some(vs) = istio_config(route) {
        return vs;
    }
    let name = str_field(route, "name");
    match name.rsplit_once('.') {
        Some((vs, idx)) if idx.parse::<u32>().is_ok() => vs.to_string(),
        _ => "-".into(),
    }
}

/// `NAME  VHOST NAME  DOMAINS  MATCH  VIRTUAL SERVICE`: one row per route.
pub fn routes(dump: &Dump, f: &Filter) -> String {
    let mut rows = Vec::new();
    for rc in dump.routes() {
        let name = str_field(&rc, "name");
        if !matches(f.name.as_deref(), name) {
            continue;
        }
        for vh in arr(&rc, "virtual_hosts") {
            let domains = describe_domains(arr(vh, "domains"));
            for r in arr(vh, "routes") {
                rows.push(vec![
                    name.to_string(),
                    str_field(vh, "name").to_string(),
                    domains.clone(),
                    describe_route_match(field(r, "match")),
                    route_source(r),
                ]);
            }
        }
    }
    render(
        &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
        &rows,
    )
}

/// Endpoints a proxy's outlier detection has ejected, as
/// (cluster, `address:port`), from its admin `/clusters`.
pub type Ejected = std::collections::BTreeSet<(String, String)>;

/// Reads the ejected endpoints from the admin `/clusters` text
/// (`cluster::address::health_flags::flags::...`, Envoy's layout).
pub fn parse_ejected(clusters: &str) -> Ejected {
    clusters
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split("::").collect();
            match parts.as_slice() {
                [cluster, addr, "health_flags", flags, ..]
                    if flags.contains("failed_outlier_check") =>
                {
                    Some((cluster.to_string(), addr.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// `ENDPOINT  STATUS  OUTLIER CHECK  CLUSTER`: EDS assignments, then the
/// inline assignments of static clusters. A config dump does not carry
/// outlier detection state: with the proxy's ejections (its admin
/// `/clusters`, as istioctl reads Envoy's) OUTLIER CHECK is `OK` or
/// `FAILED`, without them `-`.
pub fn endpoints(dump: &Dump, f: &Filter) -> String {
    endpoints_with(dump, f, None)
}

/// [`endpoints`] with the proxy's ejected endpoints.
pub fn endpoints_with(dump: &Dump, f: &Filter, ejected: Option<&Ejected>) -> String {
    let mut assignments = dump.endpoints();
    let eds: Vec<String> = assignments
        .iter()
        .map(|a| str_field(a, "cluster_name").to_string())
        .collect();
    for c in dump.clusters() {
        let la = field(&c, "load_assignment");
        if !la.is_null() && !eds.iter().any(|n| n == str_field(&c, "name")) {
            let mut la = la.clone();
            if str_field(&la, "cluster_name").is_empty() {
                la["cluster_name"] = field(&c, "name").clone();
            }
            assignments.push(la);
        }
    }
    let mut rows = Vec::new();
    for la in &assignments {
        let cluster = str_field(la, "cluster_name");
        if !matches(f.cluster.as_deref(), cluster) {
            continue;
        }
        for loc in arr(la, "endpoints") {
            for e in arr(loc, "lb_endpoints") {
                let (addr, port) = socket(field(field(e, "endpoint"), "address"));
                if f.port.is_some_and(|p| port != Some(u64::from(p))) {
                    continue;
                }
                let status = match str_field(e, "health_status") {
                    // Envoy routes to UNKNOWN endpoints as to healthy ones.
                    "" | "UNKNOWN" => "HEALTHY",
                    s => s,
                };
                let endpoint = format!("{addr}:{}", port.unwrap_or(0));
                let outlier = match ejected {
                    None => "-",
                    Some(set) if set.contains(&(cluster.to_string(), endpoint.clone())) => "FAILED",
                    Some(_) => "OK",
                };
                rows.push(vec![
                    endpoint,
                    status.to_string(),
                    outlier.to_string(),
                    cluster.to_string(),
                ]);
            }
        }
    }
    render(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
}

/// The bootstrap's node: id, cluster, locality and metadata.
pub fn bootstrap(dump: &Dump) -> String {
    let Some(b) = dump.bootstrap() else {
        return "no bootstrap in this config dump\n".into();
    };
    let node = field(&b, "node");
    let loc = field(node, "locality");
    let locality = [
        str_field(loc, "region"),
        str_field(loc, "zone"),
        str_field(loc, "sub_zone"),
    ]
    .join("/");
    let mut rows = vec![
        vec!["NODE ID".to_string(), dash(str_field(node, "id"))],
        vec!["CLUSTER".to_string(), dash(str_field(node, "cluster"))],
        vec![
            "LOCALITY".to_string(),
            if locality == "//" {
                "-".into()
            } else {
                locality
            },
        ],
    ];
    if let Some(meta) = field(node, "metadata").as_object() {
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort();
        for k in keys {
            let v = match &meta[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push(vec![format!("METADATA {k}"), v]);
        }
    }
    render(&["FIELD", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_cluster_names_split_into_their_parts() {
        let n = parse_cluster_name("outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(n.direction, "outbound");
        assert_eq!(n.port, Some(9080));
        assert_eq!(n.subset, "v1");
        assert_eq!(n.fqdn, "reviews.default.svc.cluster.local");
        let n = parse_cluster_name("BlackHoleCluster");
        assert_eq!(n.fqdn, "BlackHoleCluster");
        assert_eq!(n.port, None);
    }

    #[test]
    fn ejected_endpoints_are_read_from_admin_clusters() {
        let text = "c::lb_policy::RoundRobin\nc::10.0.0.1:80::health_flags::healthy::weight::1::priority::0::locality::\nc::10.0.0.2:80::health_flags::/failed_outlier_check::weight::1::priority::0::locality::\n";
        let ejected = parse_ejected(text);
        assert_eq!(
            ejected.into_iter().collect::<Vec<_>>(),
            [("c".to_string(), "10.0.0.2:80".to_string())]
        );
    }

    #[test]
    fn domains_show_the_shortest_names_then_a_count() {
        let d: Vec<Value> = ["a.ns.svc", "a.ns.svc:80", "a", "a:80", "a.ns", "10.0.0.1"]
            .iter()
            .map(|s| Value::from(*s))
            .collect();
        assert_eq!(describe_domains(&d), "a, a.ns + 2 more...");
    }
}
