//! What meshd's HTTP handlers and the xDS server share.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::registry::Workloads;
use crate::snapshot::SnapshotBuilder;
use crate::store::ConfigStore;
use crate::xds::status::SyncStatus;

/// Handles to meshd's components, shared by the HTTP and xDS servers.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The config source.
    pub store: Arc<dyn ConfigStore>,
    /// Snapshots of config + registry.
    pub builder: Arc<SnapshotBuilder>,
    /// Auto-registered workloads.
    pub workloads: Arc<Workloads>,
    /// Per-proxy sync status.
    pub status: Arc<SyncStatus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The embedded CA's public facts for `/debug/ca` (`None` until it
    /// loads; replaced when the CA changes, e.g. a root rotation).
    pub ca: Arc<std::sync::RwLock<Option<Arc<crate::ca_info::CaInfo>>>>,
}
