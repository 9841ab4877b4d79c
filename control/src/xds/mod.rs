//! The xDS server: Envoy's `AggregatedDiscoveryService`, state-of-the-world
//! ([`sotw`]) and incremental ([`delta`]), over tonic. Each stream is its own
//! task: a slow, silent or vanished client only stalls itself.

pub mod delta;
pub mod sotw;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::node::ProxyNode;
use crate::registry::Workloads;
use crate::snapshot::{Snapshot, SnapshotBuilder};
use crate::translate::ProxyConfig;
use status::SyncStatus;

/// Generated configs of the current snapshot, by proxy class.
type ConfigCache = (
    u64,
    HashMap<String, Arc<tokio::sync::OnceCell<Arc<ProxyConfig>>>>,
);

/// How many responses may wait for a slow client before its stream task
/// blocks (only that task).
const STREAM_BUFFER: usize = 4;

/// Streams that may have un-ACKed responses in flight at once (Istio's
/// push throttle): bounds the memory a mass push holds in send buffers.
/// `MESHD_PUSH_CONCURRENCY` overrides it.
pub const PUSH_CONCURRENCY: usize = 100;

/// A stream that does not ACK within this time gives its push slot back.
pub const PUSH_SLOT_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream's share of [`PUSH_CONCURRENCY`]: taken before a response is
/// built, given back when every response of the stream is ACKed or NACKed
/// (or after [`PUSH_SLOT_TIMEOUT`], or when the stream ends).
#[derive(Debug)]
pub struct PushSlot {
    sem: Arc<Semaphore>,
    held: Option<(OwnedSemaphorePermit, Instant)>,
}

impl PushSlot {
    /// A slot drawing on `sem`.
    pub fn new(sem: Arc<Semaphore>) -> Self {
        Self { sem, held: None }
    }

    /// Waits for a slot unless this stream holds one.
    pub async fn acquire(&mut self) {
        if self.held.is_none() {
            // The semaphore is never closed, so acquiring cannot fail.
            self.held = self
                .sem
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|p| (p, Instant::now()));
        }
    }

    /// Gives the slot back.
    pub fn release(&mut self) {
        self.held = None;
    }

    /// Whether a slot is held.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Gives the slot back if held for longer than [`PUSH_SLOT_TIMEOUT`].
    pub fn expire(&mut self) {
        if self
            .held
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() > PUSH_SLOT_TIMEOUT)
        {
            self.held = None;
        }
    }
}

/// What every stream shares.
#[derive(Debug)]
pub struct XdsState {
    /// Source of snapshots.
    pub builder: Arc<SnapshotBuilder>,
    /// Auto-registered workloads.
    pub workloads: Arc<Workloads>,
    /// Sync status for `/debug/syncz`.
    pub status: Arc<SyncStatus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    next_nonce: AtomicU64,
    cache: Mutex<ConfigCache>,
    /// Push slots (see [`PushSlot`]).
    pub push_slots: Arc<Semaphore>,
}

impl XdsState {
    /// Shared state for the streams.
    pub fn new(
        builder: Arc<SnapshotBuilder>,
        workloads: Arc<Workloads>,
        status: Arc<SyncStatus>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            builder,
            workloads,
            status,
            metrics,
            next_conn: AtomicU64::new(1),
            next_nonce: AtomicU64::new(1),
            cache: Mutex::new((0, HashMap::new())),
            push_slots: Arc::new(Semaphore::new(
                std::env::var("MESHD_PUSH_CONCURRENCY")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|n: &usize| *n > 0)
                    .unwrap_or(PUSH_CONCURRENCY),
            )),
        })
    }

    /// The config of `proxy` for `snapshot`. Proxies whose config depends on
    /// the same identity fields (a "class") share one generation per
    /// snapshot, so a push to a thousand identical sidecars costs one
    /// translation, not a thousand.
    pub async fn config_for(&self, snapshot: &Snapshot, proxy: &ProxyNode) -> Arc<ProxyConfig> {
        let key = class_key(proxy);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 != snapshot.version {
                if cache.0 > snapshot.version {
                    // A stream still on an older snapshot: don't evict newer work.
                    return Arc::new(crate::translate::generate(snapshot, proxy));
                }
                *cache = (snapshot.version, HashMap::new());
            }
            cache.1.entry(key).or_default().clone()
        };
        cell.get_or_init(|| async { Arc::new(crate::translate::generate(snapshot, proxy)) })
            .await
            .clone()
    }

    /// A fresh nonce.
    pub fn nonce(&self) -> String {
        self.next_nonce.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Registers a stream; the guard unregisters it when dropped.
    pub fn open(self: &Arc<Self>, proxy: &ProxyNode, protocol: &'static str) -> ConnGuard {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.workloads.connected(proxy);
        self.status.connected(conn, proxy, protocol);
        self.metrics.connected.inc();
        tracing::info!(conn, node = %proxy.id, protocol, "xDS stream opened");
        ConnGuard {
            state: self.clone(),
            conn,
            node_id: proxy.id.clone(),
        }
    }
}

/// Unregisters a stream on drop (however the stream task ends).
#[derive(Debug)]
pub struct ConnGuard {
    state: Arc<XdsState>,
    /// The connection id.
    pub conn: u64,
    node_id: String,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.workloads.disconnected(&self.node_id);
        self.state.status.disconnected(self.conn);
        self.state.metrics.connected.dec();
        tracing::info!(conn = self.conn, node = %self.node_id, "xDS stream closed");
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AdsService {
    state: Arc<XdsState>,
}

impl AdsService {
    /// A service over `state`.
    pub fn new(state: Arc<XdsState>) -> Self {
        Self { state }
    }

    /// The tonic server wrapper, with generous message limits (a large
    /// mesh's CDS can exceed tonic's 4 MiB default).
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(sotw::run(self.state.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(delta::run(self.state.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The identity fields translation reads (see [`crate::translate`]).
fn class_key(p: &ProxyNode) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}",
        p.namespace, p.labels, p.interception, p.outbound_port, p.service_ports
    )
}

/// Whether meshd serves this type URL.
pub fn known_type(type_url: &str) -> Option<&'static str> {
    crate::translate::PUSH_ORDER
        .iter()
        .copied()
        .find(|t| *t == type_url)
}

/// Whether a type is subscribed by wildcard when the client names nothing
/// (LDS and CDS; EDS and RDS name their resources).
pub fn wildcard_by_default(type_url: &str) -> bool {
    type_url == crate::translate::LISTENER_TYPE || type_url == crate::translate::CLUSTER_TYPE
}
