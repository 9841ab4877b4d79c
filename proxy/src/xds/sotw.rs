//! State-of-the-world ADS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::envoy::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, warn};

use super::resources::{ResourceType, Update, apply, retain_wanted, wanted};
use super::{XdsClientConfig, XdsError, connect, error_detail};
use crate::config::ProxyConfig;

/// Per type: subscribed names and the last nonce seen.
#[derive(Default)]
struct TypeState {
    names: BTreeSet<String>,
    nonce: String,
}

pub(super) async fn run_stream(
    cfg: &XdsClientConfig,
    tx: &watch::Sender<Arc<ProxyConfig>>,
    progressed: &mut bool,
) -> Result<(), XdsError> {
    let mut client = connect(cfg).await?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let current = tx.borrow().clone();
    let mut state: BTreeMap<ResourceType, TypeState> = BTreeMap::new();
    let mut node = Some(cfg.node.to_node());
    for (ty, names) in super::initial_subscriptions(&current) {
        let _ = req_tx.send(DiscoveryRequest {
            node: node.take(),
            type_url: ty.type_url(),
            version_info: current
                .type_versions
                .get(&ty.type_url())
                .cloned()
                .unwrap_or_default(),
            resource_names: names.iter().cloned().collect(),
            ..Default::default()
        });
        state.insert(
            ty,
            TypeState {
                names,
                nonce: String::new(),
            },
        );
    }
    let opened = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(req_rx))
        .await;
    super::receive(opened, progressed, |resp| {
        handle(resp, tx, &req_tx, &mut state)
    })
    .await
}

fn handle(
    resp: DiscoveryResponse,
    tx: &watch::Sender<Arc<ProxyConfig>>,
    req_tx: &mpsc::UnboundedSender<DiscoveryRequest>,
    state: &mut BTreeMap<ResourceType, TypeState>,
) {
    let DiscoveryResponse {
        version_info,
        resources,
        type_url,
        nonce,
        ..
    } = resp;
    let Some(ty) = ResourceType::from_url(&type_url) else {
        let _ = req_tx.send(DiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: nonce,
            error_detail: error_detail(&[format!(
                "type {type_url} is not supported by mesh-proxy"
            )]),
            ..Default::default()
        });
        return;
    };
    debug!(?ty, count = resources.len(), version = %version_info, %nonce, "SotW response");
    let current = tx.borrow().clone();
    let previous = current
        .type_versions
        .get(&type_url)
        .cloned()
        .unwrap_or_default();
    let mut applied = apply(
        &current,
        Update {
            ty,
            resources: resources
                .into_iter()
                .map(|a| (String::new(), String::new(), a))
                .collect(),
            removed: vec![],
            full_state: ty.is_wildcard(),
            version: version_info.clone(),
        },
    );
    let errors = std::mem::take(&mut applied.errors);
    // A NACK leaves the type's accepted version where it was.
    let acked_version = if errors.is_empty() {
        version_info
    } else {
        applied
            .config
            .type_versions
            .insert(type_url.clone(), previous.clone());
        previous
    };
    state.entry(ty).or_default().nonce = nonce.clone();
    let mut changes = Vec::new();
    for dep in [ResourceType::Endpoint, ResourceType::Route] {
        let want = wanted(&applied.config, dep);
        let st = state.entry(dep).or_default();
        if want != st.names {
            retain_wanted(&mut applied.config, dep, &want);
            changes.push(DiscoveryRequest {
                type_url: dep.type_url(),
                version_info: applied
                    .config
                    .type_versions
                    .get(&dep.type_url())
                    .cloned()
                    .unwrap_or_default(),
                resource_names: want.iter().cloned().collect(),
                response_nonce: st.nonce.clone(),
                ..Default::default()
            });
            st.names = want;
        }
    }
    let names = state
        .get(&ty)
        .map(|s| s.names.iter().cloned().collect())
        .unwrap_or_default();
    tx.send_replace(Arc::new(applied.config));
    if !errors.is_empty() {
        warn!(?ty, %nonce, errors = %errors.join("; "), "NACK: rejected resources keep their last good version");
    }
    let _ = req_tx.send(DiscoveryRequest {
        type_url,
        version_info: acked_version,
        resource_names: names,
        response_nonce: nonce,
        error_detail: error_detail(&errors),
        ..Default::default()
    });
    for c in changes {
        let _ = req_tx.send(c);
    }
}
