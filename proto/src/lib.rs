//! Wire types for the mesh: the mesh's own gRPC APIs (generated from
//! `proto/`), and the Envoy xDS v3 types re-exported from `envoy-types` so
//! every crate agrees on one version.

/// The mesh's certificate authority API (`mesh.ca.v1`).
pub mod ca {
    /// Version 1 of the CA API.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("mesh.ca.v1");
    }
}

/// Envoy's xDS v3 types and services, as served by meshd and consumed by the
/// proxy.
pub use envoy_types as envoy;

pub mod envoy_json;
