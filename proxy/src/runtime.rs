//! State shared by every connection: the config receiver and the
//! per-cluster balancer and client state that outlives config snapshots.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ProxyConfig;
use crate::http::upstream::Upstreams;
use crate::lb::Balancers;

/// Shared data-path state.
#[derive(Debug)]
pub struct Shared {
    /// Latest accepted config.
    pub config: watch::Receiver<Arc<ProxyConfig>>,
    /// Load-balancer state by cluster.
    pub balancers: Balancers,
    /// Pooled upstream HTTP clients by cluster.
    pub upstreams: Upstreams,
}

impl Shared {
    /// Shared state reading config from `config`.
    pub fn new(config: watch::Receiver<Arc<ProxyConfig>>) -> Arc<Self> {
        Arc::new(Self {
            config,
            balancers: Balancers::default(),
            upstreams: Upstreams::default(),
        })
    }
}
