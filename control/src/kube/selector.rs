//! ServiceEntry `workloadSelector` over Pods (Kubernetes mode). As in
//! Istio, a ServiceEntry with a `workloadSelector` (usually
//! `MESH_INTERNAL`) selects, in its own namespace, WorkloadEntries *and*
//! Pods by label. WorkloadEntries are config and are selected where every
//! ServiceEntry is collected ([`crate::registry::collect`]); Pods live in
//! the Kubernetes registry, so that registry builds the entry's services
//! here: the same [`crate::registry::collect`] result (ports, inline
//! endpoints, selected WorkloadEntries) plus one endpoint per matching pod.
//! They are handed over with the other platform services, which take the
//! place of the config-only service of the same host in the snapshot.
//!
//! A pod is an endpoint when it is `Running` with a pod IP: HEALTHY when
//! its `Ready` condition is `True`, else UNHEALTHY. It carries its labels
//! (plus the mTLS label when it has a sidecar), service account and node
//! locality, like a Service's endpoints; its ports are the entry's
//! (`targetPort`, else the port number).

use std::collections::BTreeMap;

use ::kube::runtime::reflector::ObjectRef;
use k8s_openapi::api::core::v1::Pod;
use mesh_model::Resource;
use mesh_model::common::labels_match;

use super::registry::{Stores, has_sidecar, locality_of};
use crate::registry::{Endpoint, Health, PendingService, TLS_MODE_LABEL, collect};

/// The services of every ServiceEntry in `config` that has a
/// `workloadSelector`, with the Pods it selects among their endpoints.
pub fn service_entry_services(config: &[Resource], stores: &Stores) -> Vec<PendingService> {
    let pods = stores.pods.state();
    let mut out = Vec::new();
    for r in config {
        let Resource::ServiceEntry(se) = r else {
            continue;
        };
        let Some(selector) = &se.spec.workload_selector else {
            continue;
        };
        let ns = r.namespace();
        // The entry with the WorkloadEntries of its namespace, collected as
        // everywhere else.
        let scope: Vec<Resource> = std::iter::once(r.clone())
            .chain(
                config
                    .iter()
                    .filter(|w| matches!(w, Resource::WorkloadEntry(_)) && w.namespace() == ns)
                    .cloned(),
            )
            .collect();
        let selected: Vec<Endpoint> = pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| {
                let empty = BTreeMap::new();
                labels_match(
                    &selector.labels,
                    p.metadata.labels.as_ref().unwrap_or(&empty),
                )
            })
            .filter_map(|p| pod_endpoint(p, stores, &r.to_string()))
            .collect();
        for mut pending in collect(&scope, &[]) {
            pending.service.endpoints.extend(selected.iter().cloned());
            out.push(pending);
        }
    }
    out
}

/// The endpoint of a running pod with an IP (see the module doc).
fn pod_endpoint(pod: &Pod, stores: &Stores, entry: &str) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let address = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    if has_sidecar(pod) {
        labels.insert(TLS_MODE_LABEL.into(), "istio".into());
    }
    let spec = pod.spec.as_ref();
    let locality = spec
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| stores.nodes.get(&ObjectRef::new(n)))
        .and_then(|n| locality_of(&n));
    Some(Endpoint {
        address,
        ports: BTreeMap::new(),
        labels,
        locality,
        weight: 1,
        health: if ready {
            Health::Healthy
        } else {
            Health::Unhealthy
        },
        service_account: spec.and_then(|s| s.service_account_name.clone()),
        namespace: ns.clone(),
        source: format!("Pod {ns}/{name} ({entry} workloadSelector)"),
    })
}
