//! The proxy's own configuration model. xDS resources are converted into
//! these types once, at the edge (`TryFrom` in the submodules); the data
//! path only ever sees these immutable values inside a [`ProxyConfig`]
//! snapshot.

// Conversions destructure every proto field, deprecated ones included, so
// that a set deprecated field is rejected by name like any other.
#![allow(deprecated)]

mod action;
pub(crate) mod check;
mod cluster;
pub(crate) mod endpoint;
mod headers;
mod http;
mod listener;
mod matcher;
mod route;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use action::{
    ClusterTarget, DirectResponse, ForwardAction, HashPolicy, Redirect, RetryPolicy, WeightedTarget,
};
pub use cluster::{
    CircuitBreaker, Cluster, DEFAULT_PANIC_THRESHOLD, Discovery, HttpOptions, LbPolicy,
    OutlierDetection, RetryBudget, TcpKeepalive, UpstreamProtocol,
};
pub use endpoint::{Endpoint, Health, LoadAssignment};
pub use headers::{AppendAction, HeaderAdd, HeaderMutation};
pub use http::{
    FaultAbort, FaultConfig, FaultDelay, HttpConnectionManager, HttpFilter, RouteSource,
};
pub use listener::{
    Cidr, FilterChain, FilterChainMatch, Listener, ListenerFilter, NetworkFilter, TcpProxy,
    TransportProtocol,
};
pub use matcher::{CasedMatch, HeaderMatch, HeaderMatchKind, QueryMatch, StringMatch};
pub use route::{PathMatch, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost};
pub use tls::{DownstreamTls, UpstreamTls};

/// One immutable view of everything the proxy was configured with. The xDS
/// client publishes a new `Arc<ProxyConfig>` per accepted update; a
/// connection or request keeps the snapshot it started with.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProxyConfig {
    /// Listeners by name (LDS).
    pub listeners: BTreeMap<String, Arc<Listener>>,
    /// Route tables by name (RDS).
    pub routes: BTreeMap<String, Arc<RouteConfig>>,
    /// Clusters by name (CDS).
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Endpoints by cluster name (EDS).
    pub endpoints: BTreeMap<String, Arc<LoadAssignment>>,
    /// Accepted version per resource, keyed by type URL then resource name.
    pub versions: BTreeMap<String, BTreeMap<String, String>>,
    /// Last response version seen per type URL (SotW `version_info`,
    /// delta `system_version_info`).
    pub type_versions: BTreeMap<String, String>,
    /// The accepted resources as received, for the admin `/config_dump`.
    #[serde(skip)]
    pub raw: crate::config_dump::RawResources,
}

impl ProxyConfig {
    /// Whether both clusters and listeners have been received once: the
    /// proxy is ready to serve.
    pub fn is_ready(&self) -> bool {
        use mesh_proto::envoy::pb::envoy::config::{
            cluster::v3::Cluster as C, listener::v3::Listener as L,
        };
        use prost::Name;
        self.type_versions.contains_key(&C::type_url())
            && self.type_versions.contains_key(&L::type_url())
    }

    /// The endpoints of a cluster, whatever its discovery type: EDS
    /// assignments come from [`ProxyConfig::endpoints`], static ones from
    /// the cluster itself.
    pub fn cluster_endpoints(&self, cluster: &Cluster) -> Option<Arc<LoadAssignment>> {
        match &cluster.discovery {
            Discovery::Eds { service_name } => self.endpoints.get(service_name).cloned(),
            Discovery::Static(assignment) => Some(assignment.clone()),
            Discovery::OriginalDst => None,
            Discovery::Dns(dns) => dns.endpoints(),
        }
    }
}

/// Why an xDS resource was rejected. Every message names the resource and
/// the field path inside it, which is what the NACK's `error_detail` says.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field the proxy does not implement is set.
    #[error("{resource}: unsupported field {field}")]
    Unsupported {
        /// Resource kind and name, e.g. `Cluster outbound|9080||x`.
        resource: Arc<str>,
        /// Path of the field inside the resource.
        field: String,
    },
    /// A field holds a value the proxy does not accept.
    #[error("{resource}: invalid {field}: {reason}")]
    Invalid {
        /// Resource kind and name.
        resource: Arc<str>,
        /// Path of the field inside the resource.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A field the proxy needs is not set.
    #[error("{resource}: missing required field {field}")]
    Missing {
        /// Resource kind and name.
        resource: Arc<str>,
        /// Path of the field inside the resource.
        field: String,
    },
    /// A typed config (`google.protobuf.Any`) did not decode.
    #[error("{resource}: cannot decode {field} as {type_url}")]
    Decode {
        /// Resource kind and name.
        resource: Arc<str>,
        /// Path of the field inside the resource.
        field: String,
        /// The type the proxy expected.
        type_url: String,
        /// The protobuf decoding error.
        #[source]
        source: prost::DecodeError,
    },
    /// A regular expression did not compile.
    #[error("{resource}: invalid regex in {field}")]
    Regex {
        /// Resource kind and name.
        resource: Arc<str>,
        /// Path of the field inside the resource.
        field: String,
        /// The regex compiler's error.
        #[source]
        source: regex::Error,
    },
}

/// Where a conversion is inside a resource: the resource label and the
/// field path so far. Errors built from it name both.
#[derive(Clone)]
pub(crate) struct Ctx {
    resource: Arc<str>,
    path: String,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.resource, self.path)
    }
}

impl Ctx {
    /// A context at the root of resource `kind name`.
    pub(crate) fn new(kind: &str, name: &str) -> Self {
        Self {
            resource: Arc::from(format!("{kind} {name}")),
            path: String::new(),
        }
    }

    /// The context of a nested message field.
    pub(crate) fn at(&self, field: &str) -> Self {
        Self {
            resource: self.resource.clone(),
            path: self.path_of(field),
        }
    }

    /// The context of element `i` of a repeated field.
    pub(crate) fn idx(&self, field: &str, i: usize) -> Self {
        self.at(&format!("{field}[{i}]"))
    }

    /// The context of entry `key` of a map field.
    pub(crate) fn key(&self, field: &str, key: &str) -> Self {
        self.at(&format!("{field}[\"{key}\"]"))
    }

    pub(crate) fn resource(&self) -> Arc<str> {
        self.resource.clone()
    }

    pub(crate) fn path_of(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    pub(crate) fn unsupported(&self, field: &str) -> ConfigError {
        ConfigError::Unsupported {
            resource: self.resource(),
            field: self.path_of(field),
        }
    }

    pub(crate) fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            resource: self.resource(),
            field: self.path_of(field),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(&self, field: &str) -> ConfigError {
        ConfigError::Missing {
            resource: self.resource(),
            field: self.path_of(field),
        }
    }
}

/// Builders of Envoy resources shared by the unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::cluster::tests::eds_cluster;
    use mesh_proto::envoy::pb::google::protobuf as wkt;

    pub(crate) fn any_cluster(
        c: mesh_proto::envoy::pb::envoy::config::cluster::v3::Cluster,
    ) -> wkt::Any {
        super::http::tests::any(&c)
    }
}
