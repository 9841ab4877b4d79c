//! The Kubernetes-style envelope every resource shares: `apiVersion`, `kind`,
//! `metadata` and a typed `spec`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A resource as users write it: `apiVersion`, `kind`, `metadata`, `spec`.
///
/// The envelope tolerates fields it does not model (for example `status`,
/// which a Kubernetes API server adds) and drops them; the `spec` types deny
/// unknown fields so that a typo is reported by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    /// `group/version`, e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// The kind as written, e.g. `VirtualService`.
    pub kind: String,
    /// Name, namespace, labels and bookkeeping.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The kind-specific specification; an absent spec is the default one.
    #[serde(default)]
    pub spec: S,
}

/// The subset of Kubernetes `ObjectMeta` the mesh uses.
///
/// Other standard metadata fields (`managedFields`, `ownerReferences`, ...)
/// are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The resource name, a DNS-1123 label (checked by validation).
    #[serde(default)]
    pub name: String,
    /// The namespace; `None` means `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Generation, bumped by the store on every spec change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Opaque version of the stored object, for optimistic concurrency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Unique id assigned by the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// RFC 3339 creation time assigned by the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// The namespace a resource lives in when its metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl ObjectMeta {
    /// The namespace, defaulting to [`DEFAULT_NAMESPACE`].
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}
