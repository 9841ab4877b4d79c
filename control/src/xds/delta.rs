//! Incremental (delta) ADS: only changed resources are sent, removals are
//! named, and a reconnecting client's `initial_resource_versions` let meshd
//! resume without resending what the client already has.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{XdsState, known_type, wildcard_by_default};
use crate::node::ProxyNode;
use crate::translate::{self, PUSH_ORDER, ProxyConfig, short_type};

#[derive(Debug, Default)]
struct TypeState {
    /// A response of this type awaits its ACK/NACK.
    pending: bool,
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has: name → version.
    client: HashMap<String, String>,
    sent_nonce: Option<String>,
    sent_version: Option<String>,
}

struct Conn {
    state: Arc<XdsState>,
    conn: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    types: HashMap<&'static str, TypeState>,
    snapshot_version: u64,
    slot: super::PushSlot,
}

/// Serves one delta stream until the client leaves.
pub async fn run(
    state: Arc<XdsState>,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let first = match requests.message().await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let Some(node) = first.node.as_ref() else {
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first DeltaDiscoveryRequest of a stream must carry `node`",
            )))
            .await;
        return;
    };
    let proxy = ProxyNode::from_node(node);
    let guard = state.open(&proxy, "delta");
    let mut snapshots = state.builder.subscribe();
    let snapshot = snapshots.borrow_and_update().clone();
    let mut config = state.config_for(&snapshot, &proxy).await;
    let mut c = Conn {
        state: state.clone(),
        conn: guard.conn,
        tx,
        types: HashMap::new(),
        snapshot_version: snapshot.version,
        slot: super::PushSlot::new(state.push_slots.clone()),
    };
    let mut pending = Some(first);
    loop {
        let req = match pending.take() {
            Some(r) => r,
            None => tokio::select! {
                r = requests.message() => match r {
                    Ok(Some(r)) => r,
                    _ => break,
                },
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if c.slot.is_held() => {
                    c.slot.expire();
                    continue;
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let started = Instant::now();
                    let snapshot = snapshots.borrow_and_update().clone();
                    c.snapshot_version = snapshot.version;
                    config = state.config_for(&snapshot, &proxy).await;
                    let mut failed = false;
                    for ty in PUSH_ORDER {
                        if c.types.get(ty).is_some_and(|t| t.subscribed) && c.send(&config, ty, false).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        break;
                    }
                    state.metrics.push_time.observe(started.elapsed().as_secs_f64());
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

impl Conn {
    async fn handle(&mut self, req: DeltaDiscoveryRequest, config: &ProxyConfig) -> Result<(), ()> {
        let Some(ty) = known_type(&req.type_url) else {
            tracing::warn!(conn = self.conn, type_url = %req.type_url, "delta request for a type meshd does not serve; ignored");
            return Ok(());
        };
        let t = self.types.entry(ty).or_default();
        // The first request of a type opens it (and states what a
        // reconnecting client already has); later requests without a nonce
        // only change the subscription.
        let first = !t.subscribed;
        if first {
            t.subscribed = true;
            t.client = req.initial_resource_versions.clone();
            t.wildcard = req.resource_names_subscribe.is_empty() && wildcard_by_default(ty);
        } else if t.sent_nonce.as_deref() == Some(req.response_nonce.as_str()) {
            t.pending = false;
            let version = t.sent_version.clone().unwrap_or_default();
            if let Some(err) = &req.error_detail {
                tracing::warn!(conn = self.conn, r#type = short_type(ty), error = %err.message, "proxy rejected delta config (NACK)");
                self.state
                    .status
                    .nacked(self.conn, ty, &version, &err.message);
                self.state.metrics.rejected(short_type(ty));
            } else {
                self.state.status.acked(self.conn, ty, &version);
            }
        }
        let mut changed = first;
        if !self.types.values().any(|t| t.pending) {
            self.slot.release();
        }
        let t = self.types.entry(ty).or_default();
        for n in &req.resource_names_subscribe {
            if n == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(n.clone());
            }
            changed = true;
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(n);
                t.client.remove(n);
            }
            changed = true;
        }
        if changed {
            return self.send(config, ty, true).await;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        config: &ProxyConfig,
        ty: &'static str,
        announce_missing: bool,
    ) -> Result<(), ()> {
        let t = self.types.entry(ty).or_default();
        let empty = Default::default();
        let all = config.get(ty).unwrap_or(&empty);
        let wanted = |n: &String| t.wildcard || t.names.contains(n);
        let mut resources = Vec::new();
        for (name, g) in all.iter().filter(|(n, _)| wanted(n)) {
            if t.client.get(name) != Some(&g.version) {
                resources.push(Resource {
                    name: name.clone(),
                    version: g.version.clone(),
                    resource: Some(g.any.clone()),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = t
            .client
            .keys()
            .filter(|n| !all.contains_key(*n) || !wanted(n))
            .cloned()
            .collect();
        // An explicit subscription to a missing resource is answered by
        // naming it removed, so the client stops waiting for it.
        let mut removed = removed;
        for n in t.names.iter().filter(|_| announce_missing) {
            if !all.contains_key(n) && !t.client.contains_key(n) && !removed.contains(n) {
                removed.push(n.clone());
            }
        }
        if resources.is_empty() && removed.is_empty() && t.sent_nonce.is_some() {
            return Ok(());
        }
        self.slot.acquire().await;
        t.pending = true;
        for r in &resources {
            t.client.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            t.client.remove(n);
        }
        let nonce = self.state.nonce();
        let version = translate::set_version_of(all.iter().filter(|(n, _)| wanted(n)));
        let count = all.keys().filter(|n| wanted(n)).count();
        t.sent_nonce = Some(nonce.clone());
        t.sent_version = Some(version.clone());
        self.state.status.sent(
            self.conn,
            ty,
            &version,
            &nonce,
            count,
            self.snapshot_version,
        );
        self.state.metrics.pushed(short_type(ty));
        let resp = DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: ty.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        self.tx.send(Ok(resp)).await.map_err(|_| ())
    }
}
