//! State-of-the-world ADS: every response carries the whole set of a type
//! (for LDS/CDS) or of the names asked for (EDS/RDS). Versions are content
//! hashes, so a reconnecting proxy that already has the current version is
//! not sent it again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::cache::ClassConfig;
use super::stream;
use super::{XdsState, known_type, wildcard_by_default};
use crate::translate::{self, Generated, PUSH_ORDER, short_type};

#[derive(Debug, Default)]
struct TypeState {
    /// A response of this type awaits its ACK/NACK.
    pending: bool,
    subscribed: bool,
    wildcard: bool,
    /// Ids ([`translate::name_id`]) of the names asked for.
    names: HashSet<u64>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    /// Id of the set last sent, while the selection is unchanged: a push of
    /// the same set is skipped without hashing it.
    sent_set: Option<u64>,
}

struct Conn {
    base: stream::Base<DiscoveryResponse>,
    types: HashMap<&'static str, TypeState>,
}

/// Serves one SotW stream until the client leaves.
pub async fn run(
    state: Arc<XdsState>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    peer: Option<mesh_ca::SpiffeId>,
) {
    let what = ("DiscoveryRequest", "sotw");
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
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn base(&mut self) -> &mut stream::Base<DiscoveryResponse> {
        &mut self.base
    }

    async fn push_all(&mut self, config: &ClassConfig) -> Result<(), ()> {
        for ty in PUSH_ORDER {
            if self.types.get(ty).is_some_and(|t| t.subscribed) {
                self.send(config, ty, false).await?;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, req: DiscoveryRequest, config: &ClassConfig) -> Result<(), ()> {
        let Some(ty) = known_type(&req.type_url) else {
            tracing::warn!(conn = self.base.conn, type_url = %req.type_url, "request for a type meshd does not serve; ignored");
            return Ok(());
        };
        let names: HashSet<u64> = req
            .resource_names
            .iter()
            .map(|n| translate::name_id(n))
            .collect();
        let star = req.resource_names.iter().any(|n| n == "*");
        let t = self.types.entry(ty).or_default();
        if !req.response_nonce.is_empty() {
            if t.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                // A reply to an older response: the newer one is in flight.
                return Ok(());
            }
            t.pending = false;
            if let Some(err) = &req.error_detail {
                let version = t.sent_version.clone().unwrap_or_default();
                tracing::warn!(conn = self.base.conn, r#type = short_type(ty), %version, error = %err.message, "proxy rejected config (NACK); it keeps its last good config");
                self.base
                    .state
                    .status
                    .nacked(self.base.conn, ty, &version, &err.message);
                self.base.state.metrics.rejected(short_type(ty));
                if t.names != names {
                    t.sent_set = None;
                }
                t.names = names;
                self.settle();
                return Ok(());
            }
            self.base
                .state
                .status
                .acked(self.base.conn, ty, &req.version_info);
            let changed = !t.wildcard && t.names != names;
            if changed {
                t.sent_set = None;
            }
            t.names = names;
            self.settle();
            if changed {
                return self.send(config, ty, false).await;
            }
            return Ok(());
        }
        // A new subscription (or a reconnect that states what it has).
        t.subscribed = true;
        t.wildcard = (names.is_empty() && wildcard_by_default(ty)) || star;
        t.names = names;
        t.sent_set = None;
        if !req.version_info.is_empty() {
            let current = translate::set_version_of(selected(config, ty, t));
            if current == req.version_info {
                t.sent_version = Some(current.clone());
                self.base.state.status.acked(self.base.conn, ty, &current);
                return Ok(());
            }
        }
        self.send(config, ty, true).await
    }
}

impl Conn {
    /// Gives the push slot back once nothing awaits an ACK.
    fn settle(&mut self) {
        if !self.types.values().any(|t| t.pending) {
            self.base.slot.release();
        }
    }

    async fn send(
        &mut self,
        config: &ClassConfig,
        ty: &'static str,
        force: bool,
    ) -> Result<(), ()> {
        let t = self.types.entry(ty).or_default();
        let set_id = config.get(ty).map(|s| s.id);
        if !force && set_id.is_some() && t.sent_set == set_id {
            return Ok(());
        }
        // Hash first, copy only if something is to be sent.
        let version = translate::set_version_of(selected(config, ty, t));
        t.sent_set = set_id;
        if !force && t.sent_version.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        self.base.slot.acquire().await;
        t.pending = true;
        let resources: Vec<_> = selected(config, ty, t)
            .map(|(_, g)| g.any.clone())
            .collect();
        let nonce = self.base.state.nonce();
        t.sent_version = Some(version.clone());
        t.sent_nonce = Some(nonce.clone());
        let count = resources.len();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: ty.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.base.state.status.sent(
            self.base.conn,
            ty,
            &version,
            &nonce,
            count,
            self.base.snapshot_version,
        );
        self.base.state.metrics.pushed(short_type(ty));
        self.base.tx.send(Ok(resp)).await.map_err(|_| ())
    }
}

/// The resources of `ty` a subscription covers, in name order.
fn selected<'a>(
    config: &'a ClassConfig,
    ty: &str,
    t: &'a TypeState,
) -> Box<dyn Iterator<Item = (&'a String, &'a Generated)> + 'a> {
    let Some(all) = config.get(ty).map(|s| &s.resources) else {
        return Box::new(std::iter::empty());
    };
    if t.wildcard {
        Box::new(all.iter())
    } else {
        Box::new(
            all.iter()
                .filter(move |(_, g)| t.names.contains(&g.name_id)),
        )
    }
}
