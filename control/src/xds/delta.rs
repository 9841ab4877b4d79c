//! Incremental (delta) ADS: only changed resources are sent, removals are
//! named, and a reconnecting client's `initial_resource_versions` let meshd
//! resume without resending what the client already has.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use bytes::Bytes;

use super::cache::{ClassConfig, IdMap, IdSet, TypeSet};
use super::stream;
use super::wire::WireResponse;
use super::{XdsState, known_type, wildcard_by_default};
use crate::translate::{self, PUSH_ORDER, short_type};

/// Most bytes of resources in one delta response (a single larger resource
/// goes alone): far below the 4 MiB gRPC clients accept by default, and
/// large enough that a 1,000-service mesh's clusters or load assignments
/// go out in one response (one ACK) rather than ten.
const DELTA_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct TypeState {
    /// A response of this type awaits its ACK/NACK.
    pending: bool,
    subscribed: bool,
    wildcard: bool,
    /// Ids ([`translate::name_id`]) of the names subscribed explicitly.
    names: IdSet,
    /// What the client has, when that is exactly the wanted part of a set
    /// meshd sent (the usual case: no per-stream copy of it).
    synced: Option<Arc<TypeSet>>,
    /// Otherwise (a new stream, or one that stated its
    /// `initial_resource_versions`): name id → version id.
    client: IdMap<u64>,
    /// Names of the resources in `client`, to name them when removed.
    client_names: IdMap<String>,
    sent_nonce: Option<String>,
    sent_version: Option<String>,
}

impl TypeState {
    fn wants(&self, id: u64) -> bool {
        self.wildcard || self.names.contains(&id)
    }

    /// Turns `synced` into the explicit `client` map (before a change of
    /// subscription that `synced` cannot describe).
    fn materialize(&mut self) {
        if let Some(set) = self.synced.take() {
            for (name, g) in &set.resources {
                if self.wants(g.name_id) {
                    self.client.insert(g.name_id, g.version_id);
                    self.client_names.insert(g.name_id, name.clone());
                }
            }
        }
    }
}

struct Conn {
    base: stream::Base<WireResponse>,
    types: HashMap<&'static str, TypeState>,
}

/// Serves one delta stream until the client leaves.
pub async fn run(
    state: Arc<XdsState>,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<WireResponse, Status>>,
    peer: Option<mesh_ca::SpiffeId>,
) {
    let what = ("DeltaDiscoveryRequest", "delta");
    let opened = stream::open(
        &state,
        &mut requests,
        |r| r.node.as_ref(),
        what,
        peer.as_ref(),
        &tx,
    );
    let Some((opened, first)) = opened.await else {
        return;
    };
    let mut c = Conn {
        base: stream::Base::new(&state, &opened, tx),
        types: HashMap::new(),
    };
    stream::serve(&state, &mut c, requests, opened, first).await;
}

impl stream::StreamConn for Conn {
    type Request = DeltaDiscoveryRequest;
    type Response = WireResponse;

    fn base(&mut self) -> &mut stream::Base<WireResponse> {
        &mut self.base
    }

    /// Pushes what changed of every subscribed type.
    async fn push_all(&mut self, config: &ClassConfig) -> Result<(), ()> {
        for ty in PUSH_ORDER {
            if self.types.get(ty).is_some_and(|t| t.subscribed) {
                self.send(config, ty, &[], &[]).await?;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, req: DeltaDiscoveryRequest, config: &ClassConfig) -> Result<(), ()> {
        let Some(ty) = known_type(&req.type_url) else {
            tracing::warn!(conn = self.base.conn, type_url = %req.type_url, "delta request for a type meshd does not serve; ignored");
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
                tracing::warn!(conn = self.base.conn, r#type = short_type(ty), error = %err.message, "proxy rejected delta config (NACK)");
                self.base
                    .state
                    .status
                    .nacked(self.base.conn, ty, &version, &err.message);
                self.base.state.metrics.rejected(short_type(ty));
            } else {
                self.base.state.status.acked(self.base.conn, ty, &version);
            }
        }
        let mut changed = first;
        if !self.types.values().any(|t| t.pending) {
            self.base.slot.release();
        }
        let t = self.types.entry(ty).or_default();
        let star = |v: &[String]| v.iter().any(|n| n == "*");
        if star(&req.resource_names_subscribe) || star(&req.resource_names_unsubscribe) {
            t.materialize();
        }
        // Names newly subscribed: the client has none of them.
        let mut fresh = Vec::new();
        for n in &req.resource_names_subscribe {
            if n == "*" {
                t.wildcard = true;
            } else {
                let id = translate::name_id(n);
                if t.names.insert(id) && !t.wildcard {
                    fresh.push(n.clone());
                }
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
            return self
                .send(config, ty, &req.resource_names_subscribe, &fresh)
                .await;
        }
        Ok(())
    }
}

/// Splits `resources` into runs of at most `max` bytes (a part larger than
/// `max` alone); always at least one (possibly empty) batch.
fn batch_by_size(resources: Vec<Bytes>, max: usize) -> Vec<Vec<Bytes>> {
    let mut batches = vec![Vec::new()];
    let mut size = 0;
    for r in resources {
        let last = batches.len() - 1;
        if !batches[last].is_empty() && size + r.len() > max {
            batches.push(Vec::new());
            size = 0;
        }
        size += r.len();
        let last = batches.len() - 1;
        batches[last].push(r);
    }
    batches
}

impl Conn {
    /// Sends what the client lacks of `ty`: `announce` are the names the
    /// request subscribed (a missing one is named removed), `fresh` those the
    /// client had not subscribed before (so it has none of them).
    async fn send(
        &mut self,
        config: &ClassConfig,
        ty: &'static str,
        announce: &[String],
        fresh: &[String],
    ) -> Result<(), ()> {
        let Some(set) = config.get(ty).cloned() else {
            return Ok(());
        };
        let t = self.types.entry(ty).or_default();
        let all = &set.resources;
        let fresh_ids: Vec<u64> = fresh.iter().map(|n| translate::name_id(n)).collect();
        let fresh_set: IdSet = fresh_ids.iter().copied().collect();
        let mut resources = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let push = |resources: &mut Vec<Bytes>, name: &String, g: &translate::Generated| {
            resources.push(set.wire(name, g))
        };
        match t.synced.clone() {
            Some(old) if Arc::ptr_eq(&old, &set) => {}
            Some(old) => match set.changes_since(&old) {
                // Derived from what the client has: only the names the class
                // diff lists can differ.
                Some(changed) => {
                    for name in changed {
                        let id = translate::name_id(name);
                        if !t.wants(id) || fresh_set.contains(&id) {
                            continue;
                        }
                        match all.get(name) {
                            Some(g) => push(&mut resources, name, g),
                            None => removed.push(name.clone()),
                        }
                    }
                }
                None => {
                    for (name, g) in all {
                        if t.wants(g.name_id)
                            && !fresh_set.contains(&g.name_id)
                            && old.resources.get(name).map(|o| o.version_id) != Some(g.version_id)
                        {
                            push(&mut resources, name, g);
                        }
                    }
                    for (name, g) in &old.resources {
                        if t.wants(g.name_id) && !all.contains_key(name) {
                            removed.push(name.clone());
                        }
                    }
                }
            },
            None => {
                let mut present = IdSet::default();
                for (name, g) in all {
                    if !t.wants(g.name_id) {
                        continue;
                    }
                    present.insert(g.name_id);
                    if !fresh_set.contains(&g.name_id)
                        && t.client.get(&g.name_id) != Some(&g.version_id)
                    {
                        push(&mut resources, name, g);
                    }
                }
                for id in t.client.keys() {
                    if !present.contains(id)
                        && let Some(name) = t.client_names.get(id)
                    {
                        removed.push(name.clone());
                    }
                }
            }
        }
        // By name id: one probe of the set's encoded resources per name
        // rather than a search of its sorted names.
        for id in &fresh_ids {
            if let Some(wire) = set.wire_by_id(*id) {
                resources.push(wire);
            }
        }
        // An explicit subscription to a missing resource is answered by
        // naming it removed, so the client stops waiting for it.
        for n in announce {
            if n != "*" && set.wire_by_id(translate::name_id(n)).is_none() && !removed.contains(n) {
                removed.push(n.clone());
            }
        }
        t.synced = Some(set.clone());
        t.client.clear();
        t.client_names.clear();
        if resources.is_empty() && removed.is_empty() && t.sent_nonce.is_some() {
            return Ok(());
        }
        let wanted_count = if t.wildcard { all.len() } else { t.names.len() };
        self.base.slot.acquire().await;
        t.pending = true;
        let version = set.version().to_string();
        // Very large updates go out in batches of at most
        // DELTA_BATCH_BYTES (the parts are shared, so a batch costs no copy;
        // each response costs the client a decode and an ACK).
        let batches = batch_by_size(resources, DELTA_BATCH_BYTES);
        let nonces: Vec<String> = batches.iter().map(|_| self.base.state.nonce()).collect();
        let last_nonce = nonces.last().cloned().unwrap_or_default();
        t.sent_nonce = Some(last_nonce.clone());
        t.sent_version = Some(version.clone());
        self.base.state.status.sent(
            self.base.conn,
            ty,
            &version,
            &last_nonce,
            wanted_count,
            self.base.snapshot_version,
        );
        self.base.state.metrics.pushed(short_type(ty));
        let n = batches.len();
        let mut removed = Some(removed);
        for (i, (batch, nonce)) in batches.into_iter().zip(nonces).enumerate() {
            let header = DeltaDiscoveryResponse {
                system_version_info: version.clone(),
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
            let resp = WireResponse::new(&header, batch);
            self.base.tx.send(Ok(resp)).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_max_bytes_and_a_large_part_goes_alone() {
        let part = |n: usize| Bytes::from(vec![0u8; n]);
        let sizes = |b: &[Vec<Bytes>]| -> Vec<Vec<usize>> {
            b.iter()
                .map(|v| v.iter().map(Bytes::len).collect())
                .collect()
        };
        let b = batch_by_size(vec![part(4), part(4), part(3), part(20), part(1)], 10);
        assert_eq!(sizes(&b), [vec![4, 4], vec![3], vec![20], vec![1]]);
        assert_eq!(sizes(&batch_by_size(Vec::new(), 10)), [Vec::<usize>::new()]);
        let one = batch_by_size((0..1000).map(|_| part(300)).collect(), DELTA_BATCH_BYTES);
        assert_eq!(one.len(), 1, "a 1,000-service CDS is one response");
    }
}
