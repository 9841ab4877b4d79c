//! Delta (incremental) ADS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, warn};

use super::resources::{ResourceType, Update, apply, retain_wanted, versions, wanted};
use super::{XdsClientConfig, XdsError, connect, error_detail};
use crate::config::ProxyConfig;

type Subs = BTreeMap<ResourceType, BTreeSet<String>>;

pub(super) async fn run_stream(
    cfg: &XdsClientConfig,
    tx: &watch::Sender<Arc<ProxyConfig>>,
    progressed: &mut bool,
) -> Result<(), XdsError> {
    let mut client = connect(cfg).await?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let current = tx.borrow().clone();
    let mut subs = Subs::new();
    let mut node = Some(cfg.node.to_node());
    for (ty, names) in super::initial_subscriptions(&current) {
        // Tell the server what we already have, so it sends only changes.
        let initial_resource_versions = versions(&current, ty)
            .into_iter()
            .filter(|(n, _)| ty.is_wildcard() || names.contains(n))
            .collect();
        let req = DeltaDiscoveryRequest {
            node: node.take(),
            type_url: ty.type_url(),
            resource_names_subscribe: names.iter().cloned().collect(),
            initial_resource_versions,
            ..Default::default()
        };
        subs.insert(ty, names);
        // The receiver lives until the stream ends; a send error only means
        // the stream is already gone, which the response loop reports.
        let _ = req_tx.send(req);
    }
    let opened = client
        .delta_aggregated_resources(UnboundedReceiverStream::new(req_rx))
        .await;
    super::receive(opened, progressed, |resp| {
        handle(resp, tx, &req_tx, &mut subs)
    })
    .await
}

fn handle(
    resp: DeltaDiscoveryResponse,
    tx: &watch::Sender<Arc<ProxyConfig>>,
    req_tx: &mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    subs: &mut Subs,
) {
    let DeltaDiscoveryResponse {
        system_version_info,
        resources,
        type_url,
        removed_resources,
        nonce,
        ..
    } = resp;
    let Some(ty) = ResourceType::from_url(&type_url) else {
        let _ = req_tx.send(DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: nonce,
            error_detail: error_detail(&[format!(
                "type {type_url} is not supported by mesh-proxy"
            )]),
            ..Default::default()
        });
        return;
    };
    let mut errors = Vec::new();
    let mut upserts = Vec::with_capacity(resources.len());
    for r in resources {
        match r.resource {
            Some(any) => upserts.push((r.name, r.version, any)),
            None => errors.push(format!("resource {:?} has no body", r.name)),
        }
    }
    debug!(?ty, count = upserts.len(), removed = removed_resources.len(), %nonce, "delta response");
    let current = tx.borrow().clone();
    let mut applied = apply(
        &current,
        Update {
            ty,
            resources: upserts,
            removed: removed_resources,
            full_state: false,
            version: system_version_info,
        },
    );
    errors.append(&mut applied.errors);
    let mut changes = Vec::new();
    for dep in [ResourceType::Endpoint, ResourceType::Route] {
        let want = wanted(&applied.config, dep);
        let have = subs.entry(dep).or_default();
        if want != *have {
            let add: Vec<String> = want.difference(have).cloned().collect();
            let remove: Vec<String> = have.difference(&want).cloned().collect();
            retain_wanted(&mut applied.config, dep, &want);
            changes.push(DeltaDiscoveryRequest {
                type_url: dep.type_url(),
                resource_names_subscribe: add,
                resource_names_unsubscribe: remove,
                ..Default::default()
            });
            *have = want;
        }
    }
    tx.send_replace(Arc::new(applied.config));
    if errors.is_empty() {
        debug!(?ty, %nonce, "ACK");
    } else {
        warn!(?ty, %nonce, errors = %errors.join("; "), "NACK: rejected resources keep their last good version");
    }
    let _ = req_tx.send(DeltaDiscoveryRequest {
        type_url,
        response_nonce: nonce,
        error_detail: error_detail(&errors),
        ..Default::default()
    });
    for c in changes {
        let _ = req_tx.send(c);
    }
}
