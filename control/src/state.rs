//! What meshd's HTTP handlers and the xDS server share.

use std::sync::Arc;

use crate::store::ConfigStore;

/// Handles to meshd's components, shared by the HTTP and xDS servers.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The config source.
    pub store: Arc<dyn ConfigStore>,
}
