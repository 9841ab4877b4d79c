//! Applying one xDS response to the current config: convert every resource
//! (outside any shared state), keep the bad ones out with a message each,
//! and produce the next snapshot with the good ones applied at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3 as xe;
use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use prost::{Message, Name};

use crate::config::{
    Cluster, Discovery, Listener, LoadAssignment, NetworkFilter, ProxyConfig, RouteConfig,
    RouteSource,
};

/// The four xDS resource types the proxy consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
}

impl ResourceType {
    /// All types, in Envoy's subscription order (CDS, LDS first).
    pub const ALL: [ResourceType; 4] = [Self::Cluster, Self::Listener, Self::Endpoint, Self::Route];

    /// The type URL on the wire.
    pub fn type_url(self) -> String {
        match self {
            Self::Cluster => xcl::Cluster::type_url(),
            Self::Endpoint => xe::ClusterLoadAssignment::type_url(),
            Self::Listener => xl::Listener::type_url(),
            Self::Route => xr::RouteConfiguration::type_url(),
        }
    }

    /// The type for a type URL.
    pub fn from_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// CDS and LDS are wildcard subscriptions; EDS and RDS name what they want.
    pub fn is_wildcard(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }
}

/// A converted resource.
enum Converted {
    Cluster(Arc<Cluster>),
    Endpoint(Arc<LoadAssignment>),
    Listener(Arc<Listener>),
    Route(Arc<RouteConfig>),
}

/// One response, protocol-neutral.
#[derive(Debug)]
pub(crate) struct Update {
    /// Resource type.
    pub ty: ResourceType,
    /// (name as announced, or empty in SotW; version; body).
    pub resources: Vec<(String, String, wkt::Any)>,
    /// Names removed (delta).
    pub removed: Vec<String>,
    /// SotW LDS/CDS: resources not in the response are removed.
    pub full_state: bool,
    /// The response's version (SotW `version_info`, delta `system_version_info`).
    pub version: String,
}

/// The result of [`apply`].
#[derive(Debug)]
pub(crate) struct Applied {
    /// The next config.
    pub config: ProxyConfig,
    /// One message per rejected resource (the NACK's error detail).
    pub errors: Vec<String>,
}

fn decode<T: Message + Default>(any: &wkt::Any, want: &str) -> Result<T, String> {
    if any.type_url != want {
        return Err(format!(
            "resource has type {} in a {want} response",
            any.type_url
        ));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("cannot decode {want}: {e}"))
}

fn convert(
    ty: ResourceType,
    any: &wkt::Any,
) -> Result<(String, Converted), (Option<String>, String)> {
    let url = ty.type_url();
    let fail = |name: Option<String>| move |e: crate::config::ConfigError| (name, e.to_string());
    match ty {
        ResourceType::Cluster => {
            let c: xcl::Cluster = decode(any, &url).map_err(|e| (None, e))?;
            let name = c.name.clone();
            let c = Cluster::try_from(c).map_err(fail(Some(name.clone())))?;
            Ok((name, Converted::Cluster(Arc::new(c))))
        }
        ResourceType::Endpoint => {
            let c: xe::ClusterLoadAssignment = decode(any, &url).map_err(|e| (None, e))?;
            let name = c.cluster_name.clone();
            let c = LoadAssignment::try_from(c).map_err(fail(Some(name.clone())))?;
            Ok((name, Converted::Endpoint(Arc::new(c))))
        }
        ResourceType::Listener => {
            let l: xl::Listener = decode(any, &url).map_err(|e| (None, e))?;
            let name = l.name.clone();
            let l = Listener::try_from(l).map_err(fail(Some(name.clone())))?;
            Ok((name, Converted::Listener(Arc::new(l))))
        }
        ResourceType::Route => {
            let r: xr::RouteConfiguration = decode(any, &url).map_err(|e| (None, e))?;
            let name = r.name.clone();
            let r = RouteConfig::try_from(r).map_err(fail(Some(name.clone())))?;
            Ok((name, Converted::Route(Arc::new(r))))
        }
    }
}

fn remove(config: &mut ProxyConfig, ty: ResourceType, name: &str) {
    match ty {
        ResourceType::Cluster => config.clusters.remove(name).is_some(),
        ResourceType::Endpoint => config.endpoints.remove(name).is_some(),
        ResourceType::Listener => config.listeners.remove(name).is_some(),
        ResourceType::Route => config.routes.remove(name).is_some(),
    };
    if let Some(v) = config.versions.get_mut(&ty.type_url()) {
        v.remove(name);
    }
}

/// Names currently held for a type.
pub(crate) fn names(config: &ProxyConfig, ty: ResourceType) -> BTreeSet<String> {
    match ty {
        ResourceType::Cluster => config.clusters.keys().cloned().collect(),
        ResourceType::Endpoint => config.endpoints.keys().cloned().collect(),
        ResourceType::Listener => config.listeners.keys().cloned().collect(),
        ResourceType::Route => config.routes.keys().cloned().collect(),
    }
}

/// Converts every resource of `update`, then applies the good ones and the
/// removals to a copy of `current`. Bad resources keep their last good
/// version.
pub(crate) fn apply(current: &ProxyConfig, update: Update) -> Applied {
    let Update {
        ty,
        resources,
        removed,
        full_state,
        version,
    } = update;
    // Conversion first, with nothing shared touched: a slow or failing
    // conversion never holds up the data path.
    let mut good = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let mut raw = Vec::new();
    for (announced, res_version, any) in resources {
        match convert(ty, &any) {
            Ok((name, c)) if announced.is_empty() || announced == name => {
                seen.insert(name.clone());
                raw.push((name.clone(), any));
                good.push((name, res_version, c));
            }
            Ok((name, _)) => {
                seen.insert(announced.clone());
                errors.push(format!(
                    "resource {announced:?} carries a {ty:?} named {name:?}"
                ));
            }
            Err((name, e)) => {
                if let Some(n) = name.or(Some(announced).filter(|a| !a.is_empty())) {
                    seen.insert(n);
                }
                errors.push(e);
            }
        }
    }
    let mut next = current.clone();
    let url = ty.type_url();
    for name in removed {
        remove(&mut next, ty, &name);
    }
    if full_state {
        for name in names(&next, ty).difference(&seen) {
            remove(&mut next, ty, name);
        }
    }
    for (name, res_version, c) in good {
        next.versions.entry(url.clone()).or_default().insert(
            name.clone(),
            if res_version.is_empty() {
                version.clone()
            } else {
                res_version
            },
        );
        match c {
            Converted::Cluster(c) => next.clusters.insert(name, c).map(|_| ()),
            Converted::Endpoint(e) => next.endpoints.insert(name, e).map(|_| ()),
            Converted::Listener(l) => next.listeners.insert(name, l).map(|_| ()),
            Converted::Route(r) => next.routes.insert(name, r).map(|_| ()),
        };
    }
    crate::config_dump::record(&mut next, &url, raw);
    next.type_versions.insert(url, version);
    Applied {
        config: next,
        errors,
    }
}

/// The EDS or RDS names the current clusters and listeners refer to.
pub(crate) fn wanted(config: &ProxyConfig, ty: ResourceType) -> BTreeSet<String> {
    match ty {
        ResourceType::Endpoint => config
            .clusters
            .values()
            .filter_map(|c| match &c.discovery {
                Discovery::Eds { service_name } => Some(service_name.clone()),
                _ => None,
            })
            .collect(),
        ResourceType::Route => config
            .listeners
            .values()
            .flat_map(|l| l.filter_chains.iter().chain(l.default_filter_chain.iter()))
            .filter_map(|fc| match &fc.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    RouteSource::Rds(name) => Some(name.clone()),
                    RouteSource::Inline(_) => None,
                },
                NetworkFilter::Tcp(_) => None,
            })
            .collect(),
        ResourceType::Cluster | ResourceType::Listener => BTreeSet::new(),
    }
}

/// Drops the resources of `ty` nobody refers to any more (after an
/// unsubscribe), so the snapshot holds no stale endpoints or routes.
pub(crate) fn retain_wanted(config: &mut ProxyConfig, ty: ResourceType, wanted: &BTreeSet<String>) {
    for name in names(config, ty).difference(wanted) {
        remove(config, ty, name);
    }
}

/// Per-resource versions of a type, for delta `initial_resource_versions`.
pub(crate) fn versions(config: &ProxyConfig, ty: ResourceType) -> BTreeMap<String, String> {
    config
        .versions
        .get(&ty.type_url())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::*;

    fn upd(ty: ResourceType, res: Vec<wkt::Any>, full_state: bool) -> Update {
        Update {
            ty,
            resources: res
                .into_iter()
                .map(|a| (String::new(), String::new(), a))
                .collect(),
            removed: vec![],
            full_state,
            version: "v1".into(),
        }
    }

    #[test]
    fn bad_resource_is_rejected_alone_and_keeps_its_last_good_version() {
        let base = apply(
            &ProxyConfig::default(),
            upd(
                ResourceType::Cluster,
                vec![any_cluster(eds_cluster("a")), any_cluster(eds_cluster("b"))],
                true,
            ),
        );
        assert!(base.errors.is_empty());
        let mut bad = eds_cluster("b");
        bad.lb_subset_config = Some(Default::default());
        let mut c = eds_cluster("c");
        c.lb_policy = 3;
        let next = apply(
            &base.config,
            upd(
                ResourceType::Cluster,
                vec![
                    any_cluster(eds_cluster("a")),
                    any_cluster(bad),
                    any_cluster(c),
                ],
                true,
            ),
        );
        assert_eq!(
            next.errors,
            ["Cluster b: unsupported field lb_subset_config"]
        );
        assert_eq!(
            names(&next.config, ResourceType::Cluster)
                .into_iter()
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // b still has its previous (EDS round robin) definition.
        assert!(matches!(
            next.config.clusters["b"].discovery,
            Discovery::Eds { .. }
        ));
    }

    #[test]
    fn sotw_full_state_removes_missing_clusters_and_wanted_follows() {
        let base = apply(
            &ProxyConfig::default(),
            upd(
                ResourceType::Cluster,
                vec![any_cluster(eds_cluster("a")), any_cluster(eds_cluster("b"))],
                true,
            ),
        );
        assert_eq!(wanted(&base.config, ResourceType::Endpoint).len(), 2);
        let next = apply(
            &base.config,
            upd(
                ResourceType::Cluster,
                vec![any_cluster(eds_cluster("a"))],
                true,
            ),
        );
        assert_eq!(
            wanted(&next.config, ResourceType::Endpoint)
                .into_iter()
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            next.config.versions[&ResourceType::Cluster.type_url()].len(),
            1
        );
    }
}
