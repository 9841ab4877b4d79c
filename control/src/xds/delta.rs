//! Incremental (delta) ADS: only changed resources are sent, removals are
//! named, and a reconnecting client's `initial_resource_versions` let meshd
//! resume without resending what the client already has.

use std::collections::{HashMap, HashSet};
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

/// Most resources in one delta response.
const DELTA_BATCH: usize = 100;

#[derive(Debug, Default)]
struct TypeState {
    /// A response of this type awaits its ACK/NACK.
    pending: bool,
    subscribed: bool,
    wildcard: bool,
    /// Ids ([`translate::name_id`]) of the names subscribed explicitly.
    names: HashSet<u64>,
    /// What the client has: name id → version id.
    client: HashMap<u64, u64>,
    /// Names of resources the client said it has that meshd may not know
    /// (from `initial_resource_versions`), to name them when removed.
    client_names: HashMap<u64, String>,
    /// The config of the last response, to name removed resources.
    prev: Option<Arc<ProxyConfig>>,
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
                        if c.types.get(ty).is_some_and(|t| t.subscribed) && c.send(&config, ty, &[]).await.is_err() {
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
    async fn handle(
        &mut self,
        req: DeltaDiscoveryRequest,
        config: &Arc<ProxyConfig>,
    ) -> Result<(), ()> {
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
            for (name, v) in &req.initial_resource_versions {
                let id = translate::name_id(name);
                t.client
                    .insert(id, u64::from_str_radix(v, 16).unwrap_or(u64::MAX));
                t.client_names.insert(id, name.clone());
            }
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
                t.names.insert(translate::name_id(n));
            }
            changed = true;
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                t.wildcard = false;
            } else {
                let id = translate::name_id(n);
                t.names.remove(&id);
                t.client.remove(&id);
                t.client_names.remove(&id);
            }
            changed = true;
        }
        if changed {
            return self.send(config, ty, &req.resource_names_subscribe).await;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        config: &Arc<ProxyConfig>,
        ty: &'static str,
        announce: &[String],
    ) -> Result<(), ()> {
        let t = self.types.entry(ty).or_default();
        let empty = Default::default();
        let all = config.get(ty).unwrap_or(&empty);
        let wanted = |t: &TypeState, id: u64| t.wildcard || t.names.contains(&id);
        let mut wanted_count = 0;
        let mut matched = 0;
        let mut resources = Vec::new();
        for (name, g) in all {
            if !wanted(t, g.name_id) {
                continue;
            }
            wanted_count += 1;
            let known = t.client.get(&g.name_id);
            if known.is_some() {
                matched += 1;
            }
            if known != Some(&g.version_id) {
                resources.push(Resource {
                    name: name.clone(),
                    version: g.version.clone(),
                    resource: Some(g.any.clone()),
                    ..Default::default()
                });
            }
        }
        // Every name the client has matched a wanted one: nothing is gone
        // (the common case; no set needs building).
        let gone: HashSet<u64> = if matched == t.client.len() {
            HashSet::new()
        } else {
            let present: HashSet<u64> = all
                .values()
                .filter(|g| wanted(t, g.name_id))
                .map(|g| g.name_id)
                .collect();
            t.client
                .keys()
                .filter(|id| !present.contains(*id))
                .copied()
                .collect()
        };
        let mut removed: Vec<String> = Vec::new();
        if !gone.is_empty() {
            let prev = t.prev.as_ref().and_then(|p| p.get(ty));
            for (name, g) in prev.into_iter().flatten() {
                if gone.contains(&g.name_id) {
                    removed.push(name.clone());
                }
            }
            for id in &gone {
                if let Some(name) = t.client_names.get(id)
                    && !removed.contains(name)
                {
                    removed.push(name.clone());
                }
            }
        }
        // An explicit subscription to a missing resource is answered by
        // naming it removed, so the client stops waiting for it.
        for n in announce {
            let id = translate::name_id(n);
            if n != "*"
                && !all.contains_key(n)
                && !t.client.contains_key(&id)
                && !removed.contains(n)
            {
                removed.push(n.clone());
            }
        }
        if resources.is_empty() && removed.is_empty() && t.sent_nonce.is_some() {
            return Ok(());
        }
        self.slot.acquire().await;
        t.pending = true;
        for r in &resources {
            t.client.insert(
                translate::name_id(&r.name),
                u64::from_str_radix(&r.version, 16).unwrap_or(u64::MAX),
            );
        }
        for id in gone {
            t.client.remove(&id);
            t.client_names.remove(&id);
        }
        t.prev = Some(config.clone());
        let version = translate::set_version_of(all.iter().filter(|(_, g)| wanted(t, g.name_id)));
        // Large updates go out in batches: smaller messages interleave
        // better on a shared connection, and the per-stream encode buffer
        // (which keeps its largest size) stays small.
        let mut batches = Vec::new();
        let mut rest = resources;
        while rest.len() > DELTA_BATCH {
            let tail = rest.split_off(DELTA_BATCH);
            batches.push(rest);
            rest = tail;
        }
        batches.push(rest);
        let nonces: Vec<String> = batches.iter().map(|_| self.state.nonce()).collect();
        let last_nonce = nonces.last().cloned().unwrap_or_default();
        t.sent_nonce = Some(last_nonce.clone());
        t.sent_version = Some(version.clone());
        self.state.status.sent(
            self.conn,
            ty,
            &version,
            &last_nonce,
            wanted_count,
            self.snapshot_version,
        );
        self.state.metrics.pushed(short_type(ty));
        let n = batches.len();
        let mut removed = Some(removed);
        for (i, (batch, nonce)) in batches.into_iter().zip(nonces).enumerate() {
            let resp = DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: batch,
                type_url: ty.to_string(),
                // Removals ride on the last batch, after the additions.
                removed_resources: if i + 1 == n {
                    removed.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                nonce,
                ..Default::default()
            };
            self.tx.send(Ok(resp)).await.map_err(|_| ())?;
        }
        Ok(())
    }
}
