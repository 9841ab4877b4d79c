//! Cross-resource analysis: problems no single resource shows, such as a route
//! to a subset no DestinationRule defines.
//!
//! There is no service registry here, so the known services are the hosts
//! the analyzed resources name: ServiceEntry hosts, DestinationRule hosts and
//! VirtualService hosts. Codes are stable; `docs/analysis-codes.md` lists
//! them. Parse and validation problems map to `MESH0001` and `MESH0002` with
//! [`Finding::from_model_error`], so that one list carries everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::common::labels_match;
use crate::host::{DEFAULT_CLUSTER_DOMAIN, fqdn, host_matches};
use crate::meta::Object;
use crate::networking::{ClientTlsMode, Destination, DestinationRuleSpec, VirtualServiceSpec};
use crate::parse::{ModelError, ProblemKind};
use crate::resource::Resource;
pub use crate::resource::SourcedResource;
use crate::security::MtlsMode;

/// The namespace whose namespace-wide policies apply to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    /// The config does not do what it says; `meshctl analyze` exits 1.
    Error,
    /// Likely a mistake.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        })
    }
}

/// One problem found by analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code, e.g. `MESH0101`.
    pub code: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// `Kind ns/name` of the resource at fault (empty when unknown).
    pub resource: String,
    /// `file#N` where that resource is.
    pub source: String,
    /// What is wrong.
    pub message: String,
    /// A one-line fix.
    pub hint: String,
}

impl fmt::Display for Finding {
    /// `Error [MESH0101] VirtualService default/reviews (reviews.yaml#1): message. Hint: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ", self.severity, self.code)?;
        if !self.resource.is_empty() {
            write!(f, "{} ", self.resource)?;
        }
        write!(f, "({}): {}", self.source, self.message)?;
        if !self.hint.is_empty() {
            write!(f, ". Hint: {}", self.hint)?;
        }
        Ok(())
    }
}

impl Finding {
    /// A parse (`MESH0001`) or validation (`MESH0002`) error as a finding.
    pub fn from_model_error(err: &ModelError) -> Finding {
        let (code, hint) = match &err.problem {
            ProblemKind::Invalid(_) => ("MESH0002", "fix the field named above"),
            _ => ("MESH0001", "fix the document so that it decodes"),
        };
        let source = match err.doc_index {
            Some(i) => format!("{}#{i}", err.source),
            None => err.source.clone(),
        };
        Finding {
            code,
            severity: Severity::Error,
            resource: err.resource.clone().unwrap_or_default(),
            source,
            message: err.problem.to_string(),
            hint: hint.to_string(),
        }
    }
}

/// A VirtualService with where it came from.
type Vs<'a> = (&'a SourcedResource, &'a Object<VirtualServiceSpec>);
/// A DestinationRule with where it came from.
type Dr<'a> = (&'a SourcedResource, &'a Object<DestinationRuleSpec>);

/// Runs every cross-resource check over `resources` (which should have
/// passed validation) and returns the findings, errors first.
pub fn analyze(resources: &[SourcedResource]) -> Vec<Finding> {
    let mut vss: Vec<Vs<'_>> = Vec::new();
    let mut drs: Vec<Dr<'_>> = Vec::new();
    for r in resources {
        match &r.resource {
            Resource::VirtualService(o) => vss.push((r, o)),
            Resource::DestinationRule(o) => drs.push((r, o)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let known = known_hosts(resources);
    let subsets = subset_index(&drs);
    let gateways: BTreeSet<String> = resources
        .iter()
        .filter(|g| matches!(g.resource, Resource::Gateway(_)))
        .map(|g| format!("{}/{}", g.resource.namespace(), g.resource.name()))
        .collect();
    for vs in &vss {
        check_destinations(&mut out, *vs, &subsets, &known);
        check_gateways(&mut out, *vs, &gateways);
    }
    check_duplicate_hosts(&mut out, &vss);
    for dr in &drs {
        check_tls_vs_strict(&mut out, *dr, resources);
    }
    check_rate_limit_routes(&mut out, resources, &vss);
    out.sort_by_key(|f| f.severity);
    out
}

fn finding(
    code: &'static str,
    severity: Severity,
    r: &SourcedResource,
    message: String,
    hint: String,
) -> Finding {
    Finding {
        code,
        severity,
        resource: r.resource.display_name(),
        source: r.location(),
        message,
        hint,
    }
}

fn dest_fqdn(host: &str, ns: &str) -> String {
    fqdn(host, ns, DEFAULT_CLUSTER_DOMAIN)
}

/// Host patterns indexed for lookup: exact names in a hash set, wildcard
/// patterns scanned (there are few), so analysis stays linear in the
/// number of resources.
#[derive(Debug)]
struct HostIndex<T> {
    exact: HashMap<String, Vec<T>>,
    wildcards: Vec<(String, T)>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: HashMap::new(),
            wildcards: Vec::new(),
        }
    }
}

impl<T> HostIndex<T> {
    fn insert(&mut self, pattern: String, value: T) {
        if pattern.starts_with('*') {
            self.wildcards.push((pattern, value));
        } else {
            self.exact.entry(pattern).or_default().push(value);
        }
    }

    /// Values of every pattern that matches `host` (an FQDN, lowercase).
    fn matching<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a T> + 'a {
        let exact = self.exact.get(host).into_iter().flatten();
        let wild = self
            .wildcards
            .iter()
            .filter(move |(p, _)| host_matches(p, host))
            .map(|(_, v)| v);
        exact.chain(wild)
    }
}

/// Hosts of ServiceEntries, DestinationRules and VirtualServices, expanded.
fn known_hosts(resources: &[SourcedResource]) -> HostIndex<()> {
    let mut hosts = HostIndex::default();
    for r in resources {
        let ns = r.resource.namespace();
        match &r.resource {
            Resource::ServiceEntry(o) => {
                for h in &o.spec.hosts {
                    hosts.insert(dest_fqdn(h, ns), ());
                }
            }
            Resource::DestinationRule(o) => hosts.insert(dest_fqdn(&o.spec.host, ns), ()),
            Resource::VirtualService(o) => {
                for h in &o.spec.hosts {
                    hosts.insert(dest_fqdn(h, ns), ());
                }
            }
            _ => {}
        }
    }
    hosts
}

/// Subset names defined for each DestinationRule host.
fn subset_index<'a>(drs: &[Dr<'a>]) -> HostIndex<&'a DestinationRuleSpec> {
    let mut index = HostIndex::default();
    for (r, dr) in drs {
        index.insert(dest_fqdn(&dr.spec.host, r.resource.namespace()), &dr.spec);
    }
    index
}

/// Every destination of a VirtualService with its field path.
fn destinations(spec: &VirtualServiceSpec) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, r) in spec.http.iter().enumerate() {
        for (k, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].route[{k}].destination"),
                &d.destination,
            ));
        }
        if let Some(m) = &r.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (k, m) in r.mirrors.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].mirrors[{k}].destination"),
                &m.destination,
            ));
        }
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        for (k, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.tcp[{i}].route[{k}].destination"),
                &d.destination,
            ));
        }
    }
    for (i, r) in spec.tls.iter().enumerate() {
        for (k, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.tls[{i}].route[{k}].destination"),
                &d.destination,
            ));
        }
    }
    out
}

/// MESH0101 (undefined subset) and MESH0105 (unknown host).
fn check_destinations(
    out: &mut Vec<Finding>,
    (r, vs): Vs<'_>,
    subsets: &HostIndex<&DestinationRuleSpec>,
    known: &HostIndex<()>,
) {
    let ns = r.resource.namespace();
    let mut reported = BTreeSet::new();
    for (path, d) in destinations(&vs.spec) {
        let host = dest_fqdn(&d.host, ns);
        if known.matching(&host).next().is_none() && reported.insert(host.clone()) {
            out.push(finding(
                "MESH0105",
                Severity::Warning,
                r,
                format!(
                    "{path}.host: {host:?} matches no ServiceEntry, DestinationRule or VirtualService host in the analyzed files"
                ),
                "check the host name, or add a ServiceEntry (or DestinationRule) for it".into(),
            ));
        }
        let Some(subset) = &d.subset else { continue };
        let defined = subsets
            .matching(&host)
            .any(|dr| dr.subsets.iter().any(|s| &s.name == subset));
        if !defined {
            out.push(finding(
                "MESH0101",
                Severity::Error,
                r,
                format!("{path}.subset: subset {subset:?} of host {host:?} is not defined by any DestinationRule"),
                format!("add subset {subset:?} to the DestinationRule for {host}, or remove it from the route"),
            ));
        }
    }
}

/// Gateways a VirtualService binds, as `ns/name`, with `mesh` kept as is.
fn bound_gateways(spec: &VirtualServiceSpec, ns: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |path: String, g: &str| {
        let full = if g == "mesh" || g.contains('/') {
            g.to_string()
        } else {
            format!("{ns}/{g}")
        };
        out.push((path, full));
    };
    for (i, g) in spec.gateways.iter().enumerate() {
        push(format!("spec.gateways[{i}]"), g);
    }
    for (i, r) in spec.http.iter().enumerate() {
        for (j, m) in r.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                push(format!("spec.http[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    out
}

/// MESH0102: a VirtualService bound to a Gateway that does not exist.
fn check_gateways(out: &mut Vec<Finding>, (r, vs): Vs<'_>, gateways: &BTreeSet<String>) {
    for (path, g) in bound_gateways(&vs.spec, r.resource.namespace()) {
        if g != "mesh" && !gateways.contains(&g) {
            out.push(finding(
                "MESH0102",
                Severity::Error,
                r,
                format!("{path}: gateway {g:?} is not defined"),
                "create the Gateway, or fix the name (namespace/name, or name in the VirtualService's namespace)".into(),
            ));
        }
    }
}

/// MESH0103: two VirtualServices route the same host on the same gateway.
fn check_duplicate_hosts(out: &mut Vec<Finding>, vss: &[Vs<'_>]) {
    // (gateway, host) -> first VirtualService that claims it.
    let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
    for (r, vs) in vss {
        let ns = r.resource.namespace();
        let mut gateways: Vec<String> = vs
            .spec
            .gateways
            .iter()
            .map(|g| {
                if g == "mesh" || g.contains('/') {
                    g.clone()
                } else {
                    format!("{ns}/{g}")
                }
            })
            .collect();
        if gateways.is_empty() {
            gateways.push("mesh".into());
        }
        for g in &gateways {
            for h in &vs.spec.hosts {
                let host = dest_fqdn(h, ns);
                let key = (g.clone(), host.clone());
                match owners.get(&key) {
                    Some(first) => out.push(finding(
                        "MESH0103",
                        Severity::Error,
                        r,
                        format!("host {host:?} on gateway {g:?} is also routed by VirtualService {first}"),
                        "merge the routes into one VirtualService per host and gateway".into(),
                    )),
                    None => {
                        owners.insert(key, format!("{}/{}", ns, r.resource.name()));
                    }
                }
            }
        }
    }
}

/// The STRICT PeerAuthentication that governs the workloads behind a
/// DestinationRule's host, if any. Workloads are recognised by the DR's
/// subset labels or by the `app: <service>` convention; the most specific
/// policy (selector, then namespace, then mesh root) wins.
fn strict_policy_for(
    dr_r: &SourcedResource,
    dr: &Object<DestinationRuleSpec>,
    resources: &[SourcedResource],
) -> Option<String> {
    let host = dest_fqdn(&dr.spec.host, dr_r.resource.namespace());
    let mut labels = host.split('.');
    let service = labels.next()?;
    let svc_ns = labels.next()?;
    if !host.ends_with(&format!(".svc.{DEFAULT_CLUSTER_DOMAIN}")) {
        return None;
    }
    let mut label_sets: Vec<BTreeMap<String, String>> =
        dr.spec.subsets.iter().map(|s| s.labels.clone()).collect();
    label_sets.push(BTreeMap::from([("app".to_string(), service.to_string())]));
    // Policies with a mode, ranked by specificity: 2 = selector,
    // 1 = namespace, 0 = mesh root. A policy without a mode (or UNSET)
    // inherits, so it does not count.
    let mut candidates: Vec<(u8, MtlsMode, String)> = Vec::new();
    for r in resources {
        let Resource::PeerAuthentication(pa) = &r.resource else {
            continue;
        };
        let ns = r.resource.namespace();
        let Some(mode) = pa.spec.mtls.as_ref().and_then(|m| m.mode) else {
            continue;
        };
        let selector = pa
            .spec
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|m| !m.is_empty());
        let rank = match selector {
            Some(sel) if ns == svc_ns && label_sets.iter().any(|l| labels_match(sel, l)) => 2,
            Some(_) => continue,
            None if ns == svc_ns => 1,
            None if ns == ROOT_NAMESPACE => 0,
            None => continue,
        };
        if mode != MtlsMode::Unset {
            candidates.push((rank, mode, format!("{ns}/{}", r.resource.name())));
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    match candidates.into_iter().next() {
        Some((_, MtlsMode::Strict, name)) => Some(name),
        _ => None,
    }
}

/// MESH0104: plain text toward workloads that require mTLS.
fn check_tls_vs_strict(out: &mut Vec<Finding>, (r, dr): Dr<'_>, resources: &[SourcedResource]) {
    let mut disabled: Vec<String> = Vec::new();
    if let Some(tp) = &dr.spec.traffic_policy {
        if tp.tls.as_ref().and_then(|t| t.mode) == Some(ClientTlsMode::Disable) {
            disabled.push("spec.trafficPolicy.tls.mode".into());
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if pl.tls.as_ref().and_then(|t| t.mode) == Some(ClientTlsMode::Disable) {
                disabled.push(format!(
                    "spec.trafficPolicy.portLevelSettings[{i}].tls.mode"
                ));
            }
        }
    }
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let mode = s
            .traffic_policy
            .as_ref()
            .and_then(|tp| tp.tls.as_ref())
            .and_then(|t| t.mode);
        if mode == Some(ClientTlsMode::Disable) {
            disabled.push(format!("spec.subsets[{i}].trafficPolicy.tls.mode"));
        }
    }
    if disabled.is_empty() {
        return;
    }
    let Some(policy) = strict_policy_for(r, dr, resources) else {
        return;
    };
    let host = dest_fqdn(&dr.spec.host, r.resource.namespace());
    for path in disabled {
        out.push(finding(
            "MESH0104",
            Severity::Error,
            r,
            format!("{path}: DISABLE sends plain text to {host:?}, whose workloads require mTLS (PeerAuthentication {policy} is STRICT)"),
            "use tls.mode ISTIO_MUTUAL (or drop the tls block), or make the PeerAuthentication PERMISSIVE".into(),
        ));
    }
}

/// MESH0106: a RateLimitPolicy matching a route name no VirtualService has.
fn check_rate_limit_routes(out: &mut Vec<Finding>, resources: &[SourcedResource], vss: &[Vs<'_>]) {
    let names: BTreeSet<&str> = vss
        .iter()
        .flat_map(|(_, vs)| vs.spec.http.iter().filter_map(|h| h.name.as_deref()))
        .collect();
    for r in resources {
        let Resource::RateLimitPolicy(p) = &r.resource else {
            continue;
        };
        for (i, limit) in p.spec.limits.iter().enumerate() {
            let Some(route) = limit.matches.as_ref().and_then(|m| m.route_name.as_deref()) else {
                continue;
            };
            if !names.contains(route) {
                out.push(finding(
                    "MESH0106",
                    Severity::Warning,
                    r,
                    format!("spec.limits[{i}].match.routeName: no VirtualService has an HTTP route named {route:?}"),
                    "name the route in the VirtualService (http[].name), or fix routeName".into(),
                ));
            }
        }
    }
}
