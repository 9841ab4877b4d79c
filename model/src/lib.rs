//! The mesh's shared config model.
//!
//! - Resource types for Istio's `networking.istio.io` and `security.istio.io`
//!   kinds (field names as in Istio's API) and the mesh's own
//!   `policy.mesh.dev` [`policy::RateLimitPolicySpec`], wrapped in
//!   [`Object`] and gathered in [`Resource`];
//! - parsing from YAML/JSON with located errors ([`parse_documents`]);
//! - per-resource validation and cross-resource analysis;
//! - SPIFFE IDs, host name rules and Istio's xDS naming conventions.
//!
//! This crate imports no other crate of the workspace: every binary (meshd,
//! the proxy, the gateways, meshctl) builds on it, so it must stay a leaf.

pub mod analysis;
pub mod common;
pub mod duration;
pub mod host;
pub mod kind;
pub mod meta;
pub mod naming;
pub mod networking;
pub mod parse;
pub mod policy;
pub mod resource;
pub mod security;
pub mod spiffe;
pub mod validate;

pub use kind::{Kind, UnknownKind};
pub use meta::{DEFAULT_NAMESPACE, Object, ObjectMeta};
pub use parse::{
    FieldError, ModelError, ProblemKind, load_documents, parse_documents, parse_json_resource,
    parse_sourced,
};
pub use resource::{Resource, SourcedResource, ToYamlError, to_yaml};
pub use spiffe::{SpiffeId, SpiffeIdError};
