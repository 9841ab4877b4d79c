//! The xDS server: Envoy's `AggregatedDiscoveryService`, state-of-the-world
//! ([`sotw`]) and incremental ([`delta`]), over tonic. Each stream is its own
//! task: a slow, silent or vanished client only stalls itself.

pub mod cache;
pub mod delta;
pub mod sotw;
pub mod status;
mod stream;
pub mod wire;

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
use cache::ClassConfig;
use status::SyncStatus;

/// The latest config of one proxy class; streams of the class wait on the
/// lock while one of them generates it.
#[derive(Debug, Default)]
struct ClassSlot {
    latest: tokio::sync::Mutex<Option<Arc<ClassConfig>>>,
    /// The newest snapshot version asked for (to drop idle classes).
    used: AtomicU64,
}

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
    classes: Mutex<HashMap<String, Arc<ClassSlot>>>,
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
            classes: Mutex::new(HashMap::new()),
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
    /// translation, not a thousand. A snapshot that changes only endpoints
    /// regenerates only the affected clusters and load assignments.
    pub async fn config_for(&self, snapshot: &Snapshot, proxy: &ProxyNode) -> Arc<ClassConfig> {
        let key = class_key(proxy);
        let slot = {
            let mut classes = self.classes.lock().unwrap_or_else(|p| p.into_inner());
            if !classes.contains_key(&key) {
                // Forget classes no stream asked about for a while.
                classes.retain(|_, s| {
                    Arc::strong_count(s) > 1
                        || s.used.load(Ordering::Relaxed) + 2 >= snapshot.version
                });
            }
            classes.entry(key).or_default().clone()
        };
        slot.used.fetch_max(snapshot.version, Ordering::Relaxed);
        let mut latest = slot.latest.lock().await;
        let prev = latest.clone();
        if let Some(c) = &prev {
            if c.snapshot_version == snapshot.version {
                return c.clone();
            }
            if c.snapshot_version > snapshot.version {
                // A stream still on an older snapshot: don't replace newer work.
                let config = crate::translate::generate(snapshot, proxy);
                return Arc::new(ClassConfig::full(snapshot.version, config, None));
            }
        }
        let started = Instant::now();
        let incremental = match (&prev, &snapshot.endpoint_changes) {
            (Some(c), Some(ch)) if c.snapshot_version >= ch.since => Some((c, ch)),
            _ => None,
        };
        let next = match incremental {
            Some((c, ch)) => {
                let (clusters, assignments) =
                    crate::translate::endpoint_resources(snapshot, proxy, &ch.hosts);
                ClassConfig::with_endpoints(c, snapshot.version, clusters, assignments)
            }
            None => {
                let config = crate::translate::generate(snapshot, proxy);
                ClassConfig::full(snapshot.version, config, prev.as_deref())
            }
        };
        tracing::debug!(
            snapshot = snapshot.version,
            incremental = incremental.is_some(),
            elapsed = ?started.elapsed(),
            "proxy class config generated"
        );
        let next = Arc::new(next);
        *latest = Some(next.clone());
        next
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

    /// The gRPC service, with generous message limits (a large mesh's CDS
    /// can exceed tonic's 4 MiB default); delta streams are served from
    /// shared pre-encoded resources ([`wire::AdsServer`]).
    pub fn into_server(self) -> wire::AdsServer {
        let state = self.state.clone();
        let inner = AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        wire::AdsServer::new(inner, state)
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
        let peer = peer_identity(request.extensions())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(sotw::run(
            self.state.clone(),
            request.into_inner(),
            tx,
            peer,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        // Reached only when the service is used without `into_server`'s
        // wrapper: decode the shared parts back into messages.
        let peer = peer_identity(request.extensions())?;
        let (tx, mut wire_rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(delta::run(
            self.state.clone(),
            request.into_inner(),
            tx,
            peer,
        ));
        let (out, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            while let Some(item) = wire_rx.recv().await {
                let msg = item.and_then(|w| {
                    w.decode()
                        .map_err(|e| Status::internal(format!("re-decoding a response: {e}")))
                });
                if out.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The identity fields translation reads (see [`crate::translate`]); the
/// locality because EDS priorities and weights are relative to it; whether
/// the proxy runs the TCP metadata exchange because the ALPN values offered
/// and accepted follow it.
fn class_key(p: &ProxyNode) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        p.namespace,
        p.locality,
        p.labels,
        p.interception,
        p.outbound_port,
        p.service_ports,
        p.explicit_inbound()
            .map(|e| (p.primary_ip().to_owned(), e.inbound_port, e.app_port)),
        p.peer_exchange
    )
}

/// The SPIFFE ID of a verified client certificate, from a request's
/// extensions (set by tonic's TLS acceptor): `None` on the plaintext port
/// or when the client presented no certificate; an error when the
/// certificate (chained to the mesh root, or the handshake would have
/// failed) carries no SPIFFE ID, i.e. is not an SVID.
pub fn peer_identity(ext: &http::Extensions) -> Result<Option<mesh_ca::SpiffeId>, Status> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let Some(leaf) = ext
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .and_then(|certs| certs.first().cloned())
    else {
        return Ok(None);
    };
    match mesh_ca::verifier::spiffe_id_of_cert(&leaf) {
        Some(id) => Ok(Some(id)),
        None => Err(Status::permission_denied(
            "the client certificate carries no SPIFFE ID (an SVID of the mesh is required)",
        )),
    }
}

/// Refuses a stream whose client certificate names another workload than
/// its node metadata (`NAMESPACE`, `SERVICE_ACCOUNT`): over mTLS a proxy
/// may only ask for its own identity's config.
pub fn authorize(peer: Option<&mesh_ca::SpiffeId>, proxy: &ProxyNode) -> Result<(), Status> {
    let Some(id) = peer else {
        return Ok(());
    };
    if id.namespace() == proxy.namespace && id.service_account() == proxy.service_account {
        return Ok(());
    }
    tracing::warn!(node = %proxy.id, spiffe_id = %id, namespace = %proxy.namespace, service_account = %proxy.service_account, "xDS stream refused: client certificate does not match node metadata");
    Err(Status::permission_denied(format!(
        "client certificate {id} does not match the node metadata (namespace {:?}, service account {:?})",
        proxy.namespace, proxy.service_account
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_in_different_localities_do_not_share_a_class() {
        let mut a = crate::translate::test_support::proxy();
        a.locality = Some("r1/z1/".into());
        let mut b = a.clone();
        b.id = "other".into();
        assert_eq!(class_key(&a), class_key(&b), "same locality: one class");
        b.locality = Some("r1/z2/".into());
        assert_ne!(class_key(&a), class_key(&b));
    }
}
