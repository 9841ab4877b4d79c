//! [`Resource`]: one resource of any kind.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta};
use crate::networking::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
    WorkloadEntrySpec,
};
use crate::policy::RateLimitPolicySpec;
use crate::security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};

/// One resource of any kind the mesh understands.
///
/// Serializes to the shape users write (`apiVersion`, `kind`, `metadata`,
/// `spec`); deserializes from it with the same checks as
/// [`crate::parse_json_resource`].
// Resources are configuration, held in snapshots and never on a hot path:
// the padding of the small variants costs less than boxing every spec.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A `VirtualService`.
    VirtualService(Object<VirtualServiceSpec>),
    /// A `DestinationRule`.
    DestinationRule(Object<DestinationRuleSpec>),
    /// A `ServiceEntry`.
    ServiceEntry(Object<ServiceEntrySpec>),
    /// A `WorkloadEntry`.
    WorkloadEntry(Object<WorkloadEntrySpec>),
    /// A `Gateway`.
    Gateway(Object<GatewaySpec>),
    /// A `Sidecar`.
    Sidecar(Object<SidecarSpec>),
    /// A `PeerAuthentication`.
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    /// An `AuthorizationPolicy`.
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
    /// A `RequestAuthentication`.
    RequestAuthentication(Object<RequestAuthenticationSpec>),
    /// A `RateLimitPolicy`.
    RateLimitPolicy(Object<RateLimitPolicySpec>),
}

/// Applies `$body` to the `Object` inside any variant.
macro_rules! with_object {
    ($res:expr, $o:ident => $body:expr) => {
        match $res {
            Resource::VirtualService($o) => $body,
            Resource::DestinationRule($o) => $body,
            Resource::ServiceEntry($o) => $body,
            Resource::WorkloadEntry($o) => $body,
            Resource::Gateway($o) => $body,
            Resource::Sidecar($o) => $body,
            Resource::PeerAuthentication($o) => $body,
            Resource::AuthorizationPolicy($o) => $body,
            Resource::RequestAuthentication($o) => $body,
            Resource::RateLimitPolicy($o) => $body,
        }
    };
}

impl Resource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::RateLimitPolicy(_) => Kind::RateLimitPolicy,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        with_object!(self, o => &o.metadata)
    }

    /// The metadata, mutably (stores set generation and resource version).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        with_object!(self, o => &mut o.metadata)
    }

    /// The `apiVersion` as written.
    pub fn api_version(&self) -> &str {
        with_object!(self, o => &o.api_version)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// The namespace, `default` when the metadata names none.
    pub fn namespace(&self) -> &str {
        self.meta().namespace_or_default()
    }

    /// `Kind namespace/name`, e.g. `VirtualService default/reviews`: how
    /// messages name a resource.
    pub fn display_name(&self) -> String {
        format!("{} {}/{}", self.kind(), self.namespace(), self.name())
    }

    /// The resource as a JSON value in the user's shape.
    pub fn to_json_value(&self) -> serde_json::Value {
        // Serializing plain data structs with string map keys cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_name())
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_object!(self, o => o.serialize(serializer))
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        crate::parse::parse_json_resource(&value).map_err(serde::de::Error::custom)
    }
}

/// A resource with where it came from, for messages and analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedResource {
    /// The file (or other source) name.
    pub source: String,
    /// 1-based index of the document within the source, counting only
    /// non-empty documents.
    pub doc_index: usize,
    /// The resource.
    pub resource: Resource,
}

impl SourcedResource {
    /// `file#N`, e.g. `reviews.yaml#2`.
    pub fn location(&self) -> String {
        format!("{}#{}", self.source, self.doc_index)
    }
}

/// Why resources could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write YAML: {0}")]
pub struct ToYamlError(#[source] serde_saphyr::ser::Error);

/// Writes resources as a YAML stream (`---` between documents), in the shape
/// users write.
pub fn to_yaml(resources: &[Resource]) -> Result<String, ToYamlError> {
    serde_saphyr::to_string_multiple(resources).map_err(ToYamlError)
}
