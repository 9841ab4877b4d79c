//! One immutable snapshot of config + registry, rebuilt (debounced) when
//! either changes and published whole through a `tokio::sync::watch`, so a
//! reader never sees half an update.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_model::Resource;
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use crate::registry::{self, Service, Workloads};
use crate::store::{ConfigStore, StoreError};
use crate::vip::VipAllocator;

/// Everything proxies' config is computed from.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Increases with every rebuild.
    pub version: u64,
    /// The config resources, decoded.
    #[serde(skip)]
    pub config: Vec<Resource>,
    /// Services by host.
    pub services: BTreeMap<String, Service>,
    /// Stored objects that failed to decode (left out).
    pub errors: Vec<String>,
    /// The store's highest resourceVersion seen.
    pub resource_version: i64,
    /// Set when everything translation reads is unchanged since an earlier
    /// snapshot except the endpoints of some services: proxies' configs can
    /// then be updated incrementally (see [`EndpointChanges`]).
    #[serde(skip)]
    pub endpoint_changes: Option<EndpointChanges>,
}

/// What changed since snapshot `since`: only the endpoints of `hosts`
/// (inline `ServiceEntry` endpoints, `WorkloadEntry`s, auto-registered
/// workloads). Every other resource, and every service but its endpoints,
/// is as it was in every snapshot from `since` to this one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointChanges {
    /// The oldest snapshot version this holds for.
    pub since: u64,
    /// Hosts of the services whose endpoints changed (cumulative since
    /// `since`).
    pub hosts: BTreeSet<String>,
}

impl Snapshot {
    /// The config resources of one kind.
    pub fn of_kind(&self, kind: mesh_model::Kind) -> impl Iterator<Item = &Resource> {
        self.config.iter().filter(move |r| r.kind() == kind)
    }
}

/// Builds snapshots from a store and the workload registry.
#[derive(Debug)]
pub struct SnapshotBuilder {
    store: Arc<dyn ConfigStore>,
    workloads: Arc<Workloads>,
    vips: Mutex<VipAllocator>,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl SnapshotBuilder {
    /// A builder publishing an empty snapshot until the first build.
    pub fn new(
        store: Arc<dyn ConfigStore>,
        workloads: Arc<Workloads>,
        vips: VipAllocator,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            workloads,
            vips: Mutex::new(vips),
            tx: watch::Sender::new(Arc::new(Snapshot::default())),
        })
    }

    /// Receives every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Builds and publishes a snapshot now.
    pub async fn rebuild(&self) -> Result<Arc<Snapshot>, StoreError> {
        let started = Instant::now();
        let objects = self.store.list(None, None).await?;
        let resource_version = objects
            .iter()
            .map(|o| o.resource_version)
            .max()
            .unwrap_or(0);
        let mut config = Vec::with_capacity(objects.len());
        let mut errors = Vec::new();
        for o in &objects {
            match crate::documents::decode(o) {
                Ok(r) => config.push(r),
                Err(e) => errors.push(e),
            }
        }
        let mut pending = registry::collect(&config, &self.workloads.list());
        pending.extend(self.workloads.platform_services());
        let hosts: Vec<String> = pending
            .iter()
            .filter(|p| p.address.is_none())
            .map(|p| p.service.host.clone())
            .collect();
        let vips = self.vips.lock().await.ensure(&hosts).await?;
        let services = pending
            .into_iter()
            .map(|p| {
                let mut s = p.service;
                s.vip = p
                    .address
                    .or_else(|| vips.get(&s.host).copied())
                    .unwrap_or(s.vip);
                (s.host.clone(), s)
            })
            .collect();
        let prev = self.tx.borrow().clone();
        let version = prev.version + 1;
        let endpoint_changes = endpoint_changes(&prev, &config, &services);
        let snap = Arc::new(Snapshot {
            version,
            config,
            services,
            errors,
            resource_version,
            endpoint_changes,
        });
        self.tx.send_replace(snap.clone());
        tracing::debug!(version, elapsed = ?started.elapsed(), endpoints_only = snap.endpoint_changes.is_some(), "snapshot published");
        Ok(snap)
    }

    /// Rebuilds whenever the store or the workloads change, waiting until
    /// `debounce` passes without a further change (at most 10× `debounce`).
    pub async fn run(self: Arc<Self>, debounce: Duration) {
        let mut store_rx = self.store.watch();
        let mut workloads_rx = self.workloads.subscribe();
        if let Err(e) = self.rebuild().await {
            tracing::error!(error = %e, "initial snapshot failed");
        }
        loop {
            let alive = tokio::select! {
                r = store_rx.recv() => !matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)),
                r = workloads_rx.changed() => r.is_ok(),
            };
            if !alive {
                return;
            }
            let deadline = tokio::time::Instant::now() + debounce * 10;
            loop {
                let quiet = tokio::time::sleep(debounce);
                tokio::select! {
                    _ = quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = store_rx.recv() => {}
                    _ = workloads_rx.changed() => {}
                }
            }
            if let Err(e) = self.rebuild().await {
                tracing::error!(error = %e, "snapshot rebuild failed; proxies keep the previous one");
            }
        }
    }
}

/// [`EndpointChanges`] of a snapshot made of `config` and `services` that
/// follows `prev`; `None` when anything but endpoints changed.
fn endpoint_changes(
    prev: &Snapshot,
    config: &[Resource],
    services: &BTreeMap<String, Service>,
) -> Option<EndpointChanges> {
    if prev.version == 0 || prev.config.len() != config.len() {
        return None;
    }
    if !prev
        .config
        .iter()
        .zip(config)
        .all(|(a, b)| a == b || same_but_endpoints(a, b))
    {
        return None;
    }
    if prev.services.len() != services.len() {
        return None;
    }
    let mut hosts = BTreeSet::new();
    for ((ha, a), (hb, b)) in prev.services.iter().zip(services) {
        if ha != hb {
            return None;
        }
        if a == b {
            continue;
        }
        let mut a_bare = a.clone();
        a_bare.endpoints = b.endpoints.clone();
        if a_bare != *b {
            return None;
        }
        hosts.insert(hb.clone());
    }
    Some(match &prev.endpoint_changes {
        Some(c) => EndpointChanges {
            since: c.since,
            hosts: c.hosts.union(&hosts).cloned().collect(),
        },
        None => EndpointChanges {
            since: prev.version,
            hosts,
        },
    })
}

/// Whether two versions of one resource differ only in what feeds service
/// endpoints: a `ServiceEntry`'s inline `endpoints`, or a `WorkloadEntry`
/// (which translation reads only through the registry).
fn same_but_endpoints(a: &Resource, b: &Resource) -> bool {
    let same_id = |x: &mesh_model::ObjectMeta, y: &mesh_model::ObjectMeta| {
        x.name == y.name
            && x.namespace == y.namespace
            && x.labels == y.labels
            && x.annotations == y.annotations
    };
    match (a, b) {
        (Resource::ServiceEntry(x), Resource::ServiceEntry(y)) => {
            if !same_id(&x.metadata, &y.metadata) {
                return false;
            }
            let mut bare = x.spec.clone();
            bare.endpoints = y.spec.endpoints.clone();
            bare == y.spec
        }
        (Resource::WorkloadEntry(x), Resource::WorkloadEntry(y)) => {
            x.metadata.name == y.metadata.name && x.metadata.namespace == y.metadata.namespace
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    const SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec: {hosts: [backend], ports: [{number: 80, name: http}]}
";

    // Real time: sqlx's pool timeouts misfire under paused time.
    #[tokio::test]
    async fn changes_are_debounced_into_one_snapshot() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let workloads = Arc::new(Workloads::new(Duration::from_secs(60)));
        let b = SnapshotBuilder::new(store.clone(), workloads, VipAllocator::default());
        let mut rx = b.subscribe();
        tokio::spawn(b.clone().run(Duration::from_millis(100)));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().version, 1);
        for i in 0..5 {
            let text = SE.replace("backend", &format!("backend{i}"));
            store
                .apply(crate::documents::parse(&text, "t").unwrap())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rx.changed().await.unwrap();
        let snap = rx.borrow_and_update().clone();
        assert_eq!(snap.version, 2, "five writes, one push");
        assert_eq!(snap.services.len(), 5);
        assert!(snap.services.values().all(|s| s.vip.octets()[0] == 240));
    }

    #[tokio::test]
    async fn an_endpoint_only_change_is_told_apart_from_other_changes() {
        use crate::translate::test_support::snapshot;
        let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: [b], ports: [{number: 80, name: http}], workloadSelector: {labels: {app: b}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b-1}
spec: {address: 10.0.1.1, labels: {app: b}}
";
        let prev = snapshot(yaml).await;
        let changes = |text: &str| {
            let prev = prev.clone();
            let text = text.to_string();
            async move {
                let next = snapshot(&text).await;
                endpoint_changes(&prev, &next.config, &next.services)
            }
        };
        let inline = changes(&yaml.replace("10.0.0.1", "10.0.0.2"))
            .await
            .unwrap();
        assert_eq!(inline.since, 1);
        assert_eq!(
            inline.hosts.into_iter().collect::<Vec<_>>(),
            ["a.default.svc.cluster.local"]
        );
        let entry = changes(&yaml.replace("10.0.1.1", "10.0.1.2"))
            .await
            .unwrap();
        assert_eq!(
            entry.hosts.into_iter().collect::<Vec<_>>(),
            ["b.default.svc.cluster.local"]
        );
        let same = changes(yaml).await.unwrap();
        assert!(same.hosts.is_empty());
        assert!(
            changes(&yaml.replace("name: http}]\n  endpoints", "name: http-x}]\n  endpoints"))
                .await
                .is_none(),
            "a port change is not endpoint-only"
        );
        let vs = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}
";
        assert!(
            changes(&format!("{yaml}{vs}")).await.is_none(),
            "new config"
        );
    }
}
