//! State shared by every connection: the config receiver, the per-cluster
//! balancer and client state that outlives config snapshots, metrics, the
//! workload's identity and drain bookkeeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ProxyConfig;
use crate::http::upstream::Upstreams;
use crate::lb::Balancers;
use crate::metrics::Metrics;

/// Who the proxy serves, for metric labels.
#[derive(Debug, Clone)]
pub struct WorkloadInfo {
    /// Workload name.
    pub workload: String,
    /// SPIFFE ID of the workload, `unknown` without one.
    pub principal: String,
}

impl Default for WorkloadInfo {
    fn default() -> Self {
        Self {
            workload: "unknown".into(),
            principal: "unknown".into(),
        }
    }
}

/// Changes the log filter at runtime (`/logging?level=`); set by the
/// binary, which owns the tracing subscriber.
pub struct LogControl(pub Box<SetLevel>);

/// Sets the log filter; the error says why a filter was refused.
pub type SetLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

/// Shared data-path state.
#[derive(Debug)]
pub struct Shared {
    /// Latest accepted config.
    pub config: watch::Receiver<Arc<ProxyConfig>>,
    /// Load-balancer state by cluster.
    pub balancers: Balancers,
    /// Pooled upstream HTTP clients by cluster.
    pub upstreams: Upstreams,
    /// Istio metrics.
    pub metrics: Metrics,
    /// This workload.
    pub workload: WorkloadInfo,
    /// Istio's peer metadata exchange: this workload's metadata (set by
    /// the agent from its node identity) and the peers decoded so far.
    pub peer_metadata: crate::peer_metadata::Exchange,
    /// The workload's SVID, for mTLS.
    pub svid: crate::tls::SvidReceiver,
    /// Set when a CA is configured: the proxy is not ready until the SVID
    /// arrives.
    pub svid_required: std::sync::atomic::AtomicBool,
    /// Set to true to stop accepting (SIGTERM drain).
    pub draining: watch::Sender<bool>,
    /// Notified by `/quitquitquit`: drain and exit.
    pub quit: tokio::sync::Notify,
    /// Runtime log level control, when the binary provides one.
    pub log_control: std::sync::OnceLock<LogControl>,
    active: Arc<AtomicUsize>,
}

/// The longest a runtime running [`anchor_timers`] has no timer pending.
pub const TIMER_ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// Keeps a timer pending on the runtime at all times, never more than
/// [`TIMER_ANCHOR_PERIOD`] away; spawn it once for the life of the process.
///
/// Tokio wakes its I/O driver (an `eventfd` write, then one more
/// `epoll_wait`) whenever a timer is armed earlier than every pending one.
/// On a proxy with no request in flight nothing is pending, so each
/// request's route timeout did that: two of its eight system calls at
/// 1,000 rps (docs/performance.md). With this timer pending a route
/// timeout is not the earliest one (unless under a second); the price is
/// one wake-up a second.
pub async fn anchor_timers() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR_PERIOD);
    loop {
        tick.tick().await;
    }
}

/// Counts one open downstream connection while alive.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<AtomicUsize>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Shared state reading config from `config`, with an unknown workload.
    pub fn new(config: watch::Receiver<Arc<ProxyConfig>>) -> Arc<Self> {
        Self::with_workload(config, WorkloadInfo::default())
    }

    /// Shared state for a known workload.
    pub fn with_workload(
        config: watch::Receiver<Arc<ProxyConfig>>,
        workload: WorkloadInfo,
    ) -> Arc<Self> {
        Self::with_svid(config, workload, crate::tls::no_svid())
    }

    /// Shared state for a known workload with an SVID source (the CA
    /// client's watch channel).
    pub fn with_svid(
        config: watch::Receiver<Arc<ProxyConfig>>,
        workload: WorkloadInfo,
        svid: crate::tls::SvidReceiver,
    ) -> Arc<Self> {
        Arc::new(Self {
            svid,
            svid_required: std::sync::atomic::AtomicBool::new(false),
            config,
            balancers: Balancers::default(),
            upstreams: Upstreams::default(),
            metrics: Metrics::default(),
            workload,
            peer_metadata: Default::default(),
            draining: watch::Sender::new(false),
            quit: tokio::sync::Notify::new(),
            log_control: std::sync::OnceLock::new(),
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Marks a downstream connection open until the guard drops.
    pub fn connection_guard(&self) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.active.clone())
    }

    /// Open downstream connections.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops accepting, then waits until open connections finish or
    /// `timeout` passes. Returns the connections still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.active_connections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_anchor_timer_stays_armed_for_the_life_of_the_process() {
        let anchor = tokio::spawn(anchor_timers());
        for _ in 0..5 {
            tokio::time::sleep(TIMER_ANCHOR_PERIOD * 3).await;
            assert!(!anchor.is_finished());
        }
        anchor.abort();
    }
}
