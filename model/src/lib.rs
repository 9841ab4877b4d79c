//! The mesh's shared config model.
//!
//! This crate imports no other crate of the workspace: every binary (meshd,
//! the proxy, the gateways, meshctl) builds on it, so it must stay a leaf.

pub mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError};
