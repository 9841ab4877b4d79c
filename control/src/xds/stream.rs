//! What SotW and delta streams share: the checks of a stream's first
//! request and its registration ([`open`]), and the events a stream task
//! waits for ([`next_event`]).

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::cache::ClassConfig;
use super::{ConnGuard, XdsState, authorize};
use crate::node::ProxyNode;
use crate::snapshot::Snapshot;

/// A stream whose first request was accepted.
pub(crate) struct Opened {
    /// The proxy, from the first request's `node`.
    pub proxy: ProxyNode,
    /// Unregisters the stream when dropped.
    pub guard: ConnGuard,
    /// The snapshots the stream follows.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Version of the snapshot `config` comes from.
    pub snapshot_version: u64,
    /// The proxy's config for that snapshot.
    pub config: Arc<ClassConfig>,
}

/// Starts a stream: reads its first request, which must carry `node`
/// (`what` names the request type in the error) and a client certificate must match it
/// ([`authorize`]); then the stream is registered and its config
/// generated. `None` when refused (the status has been sent on `tx`) or
/// when the client left first.
pub(crate) async fn open<Q, R>(
    state: &Arc<XdsState>,
    requests: &mut Streaming<Q>,
    node_of: fn(&Q) -> Option<&Node>,
    (what, protocol): (&str, &'static str),
    peer: Option<&mesh_ca::SpiffeId>,
    tx: &mpsc::Sender<Result<R, Status>>,
) -> Option<(Opened, Q)> {
    let first = match requests.message().await {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "xDS stream failed before its first request");
            let _ = tx.send(Err(e)).await;
            return None;
        }
    };
    let Some(node) = node_of(&first) else {
        let msg = format!("the first {what} of a stream must carry `node`");
        let _ = tx.send(Err(Status::invalid_argument(msg))).await;
        return None;
    };
    let proxy = ProxyNode::from_node(node);
    if let Err(status) = authorize(peer, &proxy) {
        let _ = tx.send(Err(status)).await;
        return None;
    }
    let guard = state.open(&proxy, protocol);
    let mut snapshots = state.builder.subscribe();
    let snapshot = snapshots.borrow_and_update().clone();
    let config = state.config_for(&snapshot, &proxy).await;
    let opened = Opened {
        proxy,
        guard,
        snapshots,
        snapshot_version: snapshot.version,
        config,
    };
    Some((opened, first))
}

/// What a stream task wakes up for.
pub(crate) enum Event<R> {
    /// The client sent a request.
    Request(R),
    /// A new snapshot was published.
    Snapshot(Arc<Snapshot>),
    /// A second passed while holding a push slot (time to check its expiry).
    Tick,
    /// A request could not be read (malformed, or the stream broke).
    Failed(Status),
    /// The client left, or meshd is shutting down.
    End,
}

/// Waits for the next [`Event`] of stream `conn`.
pub(crate) async fn next_event<R>(
    conn: u64,
    requests: &mut Streaming<R>,
    snapshots: &mut watch::Receiver<Arc<Snapshot>>,
    slot_held: bool,
) -> Event<R> {
    tokio::select! {
        r = requests.message() => match r {
            Ok(Some(r)) => Event::Request(r),
            Ok(None) => Event::End,
            Err(e) => {
                tracing::debug!(conn, error = %e, "xDS stream failed");
                Event::Failed(e)
            }
        },
        _ = tokio::time::sleep(Duration::from_secs(1)), if slot_held => Event::Tick,
        changed = snapshots.changed() => match changed {
            Ok(()) => Event::Snapshot(snapshots.borrow_and_update().clone()),
            Err(_) => Event::End,
        },
    }
}

/// What every stream keeps, whatever its protocol.
pub(crate) struct Base<R> {
    /// Shared server state.
    pub state: Arc<XdsState>,
    /// The connection id.
    pub conn: u64,
    /// Responses to the client.
    pub tx: mpsc::Sender<Result<R, Status>>,
    /// The snapshot the current config comes from.
    pub snapshot_version: u64,
    /// The stream's push slot.
    pub slot: super::PushSlot,
}

impl<R> Base<R> {
    /// The base of the stream `opened`, answering on `tx`.
    pub fn new(
        state: &Arc<XdsState>,
        opened: &Opened,
        tx: mpsc::Sender<Result<R, Status>>,
    ) -> Self {
        Self {
            state: state.clone(),
            conn: opened.guard.conn,
            tx,
            snapshot_version: opened.snapshot_version,
            slot: super::PushSlot::new(state.push_slots.clone()),
        }
    }
}

/// One protocol's side of a stream (SotW or delta).
pub(crate) trait StreamConn: Send {
    /// The request message.
    type Request: Send;
    /// What goes to the client.
    type Response: Send;
    /// The common part.
    fn base(&mut self) -> &mut Base<Self::Response>;
    /// Answers one request.
    fn handle(
        &mut self,
        req: Self::Request,
        config: &ClassConfig,
    ) -> impl std::future::Future<Output = Result<(), ()>> + Send;
    /// Pushes what changed of every subscribed type.
    fn push_all(
        &mut self,
        config: &ClassConfig,
    ) -> impl std::future::Future<Output = Result<(), ()>> + Send;
}

/// Serves an opened stream until the client leaves: answers `first`, then
/// every request, and pushes every new snapshot.
pub(crate) async fn serve<C: StreamConn>(
    state: &Arc<XdsState>,
    c: &mut C,
    mut requests: Streaming<C::Request>,
    opened: Opened,
    first: C::Request,
) {
    let Opened {
        proxy,
        guard,
        mut snapshots,
        mut config,
        ..
    } = opened;
    let mut pending = Some(first);
    loop {
        let held = c.base().slot.is_held();
        let req = match pending.take() {
            Some(r) => r,
            None => match next_event(guard.conn, &mut requests, &mut snapshots, held).await {
                Event::Request(r) => r,
                Event::End => break,
                Event::Failed(status) => {
                    let _ = c.base().tx.send(Err(status)).await;
                    break;
                }
                Event::Tick => {
                    c.base().slot.expire();
                    continue;
                }
                Event::Snapshot(snapshot) => {
                    let started = std::time::Instant::now();
                    c.base().snapshot_version = snapshot.version;
                    config = state.config_for(&snapshot, &proxy).await;
                    if c.push_all(&config).await.is_err() {
                        break;
                    }
                    let took = started.elapsed().as_secs_f64();
                    state.metrics.push_time.observe(took);
                    continue;
                }
            },
        };
        if c.handle(req, &config).await.is_err() {
            break;
        }
    }
    drop(guard);
}
