//! The mesh's config kinds as Kubernetes custom resources: a read-only
//! [`ConfigStore`] fed by one kube-runtime watcher per kind.
//!
//! Each kind's initial list is buffered and swapped in whole (objects gone
//! since the last list become `Deleted` events), so a re-list after a
//! `410 Gone` never shows a half-filled store. Every object goes through the
//! model's parser and validation; an invalid one is skipped with a warning
//! naming the field path (its last valid version, if any, stays served).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use ::kube::Client;
use ::kube::api::{Api, ApiResource, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use mesh_model::Kind;
use tokio::sync::{Notify, broadcast, watch};

use crate::store::{
    ConfigStore, EventType, NewObject, ResourceKey, StoreError, StoredObject, WatchEvent,
    WriteResult, stamp, without_stamps,
};

/// The annotation `kubectl apply` leaves: a second copy of the object, not
/// worth keeping.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The custom resource meshd watches for `kind`: the kind's API group at its
/// preferred (newest) version, which every CRD of the chart serves (the API
/// server converts objects stored at older versions).
pub fn api_resource(kind: Kind) -> ApiResource {
    let version = kind.api_versions()[0];
    ApiResource {
        group: kind.api_group().to_string(),
        version: version.to_string(),
        api_version: kind.preferred_api_version(),
        kind: kind.as_str().to_string(),
        plural: kind.plural(),
    }
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ResourceKey, StoredObject>,
    version: i64,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    events: broadcast::Sender<WatchEvent>,
    synced: watch::Sender<BTreeSet<Kind>>,
    // Statuses to write (the object's differs), latest per object.
    status: Mutex<BTreeMap<ResourceKey, PendingStatus>>,
    status_changed: Notify,
}

/// A status to write, and the object it belongs to.
#[derive(Debug, Clone)]
struct PendingStatus {
    kind: Kind,
    status: serde_json::Value,
    object: ObjectReference,
}

/// Read-only [`ConfigStore`] over the mesh's custom resources.
#[derive(Debug, Clone)]
pub struct KubeStore {
    inner: Arc<Inner>,
}

impl Default for KubeStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeStore {
    /// An empty store; [`KubeStore::spawn`] feeds it.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        KubeStore {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                events,
                synced: watch::Sender::new(BTreeSet::new()),
                status: Mutex::new(BTreeMap::new()),
                status_changed: Notify::new(),
            }),
        }
    }

    /// Spawns one watcher per kind of the model (cluster-wide).
    pub fn spawn(&self, client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
        Kind::ALL
            .iter()
            .map(|&kind| self.spawn_kind(client.clone(), kind))
            .collect()
    }

    /// Spawns the watcher of one kind.
    pub fn spawn_kind(&self, client: Client, kind: Kind) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.watch_kind(client, kind).await })
    }

    /// Whether every kind in `kinds` has had its initial list.
    pub fn is_synced(&self, kinds: &[Kind]) -> bool {
        let synced = self.inner.synced.borrow();
        kinds.iter().all(|k| synced.contains(k))
    }

    /// Waits until every kind in `kinds` has had its initial list (a kind
    /// whose CRD is not installed counts as listed, empty).
    pub async fn wait_synced(&self, kinds: &[Kind]) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx
            .wait_for(|synced| kinds.iter().all(|k| synced.contains(k)))
            .await;
    }

    async fn watch_kind(self, client: Client, kind: Kind) {
        let ar = api_resource(kind);
        let api: Api<DynamicObject> = Api::all_with(client, &ar);
        let mut stream = watcher(api).default_backoff().boxed();
        let mut buffer: Option<Vec<DynamicObject>> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Init) => buffer = Some(Vec::new()),
                Ok(Event::InitApply(obj)) => buffer.get_or_insert_with(Vec::new).push(obj),
                Ok(Event::InitDone) => {
                    let listed = buffer.take().unwrap_or_default();
                    self.replace_kind(kind, listed);
                }
                Ok(Event::Apply(obj)) => self.apply_object(kind, obj),
                Ok(Event::Delete(obj)) => self.delete_object(kind, &obj),
                Err(watcher::Error::InitialListFailed(::kube::Error::Api(status)))
                    if status.code == 404 =>
                {
                    // The CRD is not installed: nothing of this kind can
                    // exist. Keep retrying (backoff) so a later install is seen.
                    if !self.is_synced(&[kind]) {
                        tracing::warn!(kind = kind.as_str(), group = %ar.group, version = %ar.version,
                            "custom resource not installed; serving none of this kind until it is");
                        self.mark_synced(kind);
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), error = %e, "watch of custom resources failed; retrying")
                }
            }
        }
    }

    fn mark_synced(&self, kind: Kind) {
        self.inner.synced.send_if_modified(|s| s.insert(kind));
    }

    /// Replaces every object of `kind` with `listed` (the result of a full
    /// list), emitting the differences as events.
    pub fn replace_kind(&self, kind: Kind, listed: Vec<DynamicObject>) {
        let mut events = Vec::new();
        {
            let mut s = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            let mut seen = BTreeSet::new();
            for obj in listed {
                self.note_status(kind, &obj);
                if let Some(key) = upsert(&mut s, kind, obj, &mut events) {
                    seen.insert(key);
                }
            }
            let gone: Vec<ResourceKey> = s
                .objects
                .keys()
                .filter(|k| k.kind == kind.as_str() && !seen.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                remove(&mut s, &key, &mut events);
            }
        }
        self.publish(events);
        self.mark_synced(kind);
        tracing::debug!(kind = kind.as_str(), "custom resources listed");
    }

    /// An object of `kind` was added or changed.
    pub fn apply_object(&self, kind: Kind, obj: DynamicObject) {
        let mut events = Vec::new();
        {
            let mut s = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            self.note_status(kind, &obj);
            upsert(&mut s, kind, obj, &mut events);
        }
        self.publish(events);
    }

    /// An object of `kind` was deleted.
    pub fn delete_object(&self, kind: Kind, obj: &DynamicObject) {
        let key = ResourceKey {
            kind: kind.as_str().to_string(),
            namespace: obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| mesh_model::DEFAULT_NAMESPACE.to_string()),
            name: obj.metadata.name.clone().unwrap_or_default(),
        };
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let mut events = Vec::new();
        {
            let mut s = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            remove(&mut s, &key, &mut events);
        }
        self.publish(events);
    }

    /// Queues the status `obj` should have when it differs from the one it
    /// has (so writing it once settles: the resulting watch event finds it
    /// equal).
    fn note_status(&self, kind: Kind, obj: &DynamicObject) {
        let key = ResourceKey {
            kind: kind.as_str().to_string(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
        };
        let want = desired_status(kind, obj);
        let have = obj.data.get("status").and_then(|s| s.get("conditions"));
        let mut pending = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        if have == want.get("conditions") {
            pending.remove(&key);
            return;
        }
        let object = super::events::reference(kind, obj);
        pending.insert(
            key,
            PendingStatus {
                kind,
                status: want,
                object,
            },
        );
        drop(pending);
        self.inner.status_changed.notify_one();
    }

    /// Statuses waiting to be written.
    pub fn pending_status(&self) -> Vec<(ResourceKey, serde_json::Value)> {
        let pending = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .map(|(k, p)| (k.clone(), p.status.clone()))
            .collect()
    }

    /// While this replica leads, writes each object's `Accepted` condition
    /// (with the validation error of an invalid one) to its status
    /// subresource, only where it differs from what the object has; for an
    /// invalid object it also creates a Warning Event (see [`super::events`]).
    pub fn spawn_status_writer(
        &self,
        client: Client,
        mut leader: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if *leader.borrow_and_update() {
                    let batch = std::mem::take(
                        &mut *this.inner.status.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    for (key, pending) in batch {
                        this.write_status(&client, &key, pending).await;
                    }
                }
                tokio::select! {
                    r = leader.changed() => if r.is_err() { return },
                    () = this.inner.status_changed.notified() => {}
                }
            }
        })
    }

    async fn write_status(&self, client: &Client, key: &ResourceKey, pending: PendingStatus) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &api_resource(pending.kind));
        let condition = &pending.status["conditions"][0];
        let invalid = (condition["reason"] == super::events::REASON_INVALID).then(|| {
            condition["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        let patch = ::kube::api::Patch::Merge(serde_json::json!({ "status": pending.status }));
        match api
            .patch_status(&key.name, &::kube::api::PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::debug!(resource = %key, "status written");
                if let Some(message) = invalid {
                    let event = super::events::invalid(
                        &pending.object,
                        &message,
                        k8s_openapi::jiff::Timestamp::now(),
                    );
                    super::events::post(client, &event).await;
                }
            }
            // Deleted meanwhile: nothing to report on.
            Err(::kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => {
                tracing::warn!(resource = %key, %error, "writing status failed; retrying on the next change")
            }
        }
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        for e in events {
            // No subscriber is fine: the snapshot builder lists on start.
            let _ = self.inner.events.send(e);
        }
    }
}

fn watcher(
    api: Api<DynamicObject>,
) -> impl futures_util::Stream<Item = watcher::Result<Event<DynamicObject>>> {
    watcher::watcher(api, watcher::Config::default())
}

/// Converts a custom resource into the model's form, validated; the error
/// names the object and the field path.
pub fn convert(kind: Kind, obj: DynamicObject) -> Result<NewObject, String> {
    let ns = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| mesh_model::DEFAULT_NAMESPACE.to_string());
    let name = obj.metadata.name.clone().unwrap_or_default();
    let label = format!("{} {ns}/{name}", kind.as_str());
    let mut value = serde_json::to_value(&obj).map_err(|e| format!("{label}: {e}"))?;
    if let Some(o) = value.as_object_mut() {
        // List items of custom resources carry apiVersion/kind, but do not
        // depend on it.
        o.entry("apiVersion")
            .or_insert_with(|| kind.preferred_api_version().into());
        o.entry("kind").or_insert_with(|| kind.as_str().into());
    }
    let mut res = mesh_model::parse_json_resource(&value).map_err(|e| format!("{label}: {e}"))?;
    let problems: Vec<String> = res.validate().iter().map(|e| e.to_string()).collect();
    if !problems.is_empty() {
        return Err(format!("{label}: {}", problems.join("; ")));
    }
    let meta = res.meta_mut();
    meta.namespace = Some(ns);
    meta.annotations.remove(LAST_APPLIED);
    Ok(NewObject {
        key: crate::documents::key_of(&res),
        object: res.to_json_value(),
    })
}

/// The status meshd gives an object: an `Accepted` condition, false with
/// the validation error (field path included) for an invalid one.
pub fn desired_status(kind: Kind, obj: &DynamicObject) -> serde_json::Value {
    let generation = obj.metadata.generation.unwrap_or(1);
    let condition = match convert(kind, obj.clone()) {
        Ok(_) => serde_json::json!({
            "type": "Accepted", "status": "True", "reason": "Valid",
            "message": "accepted by meshd", "observedGeneration": generation,
        }),
        Err(message) => serde_json::json!({
            "type": "Accepted", "status": "False", "reason": "Invalid",
            "message": message, "observedGeneration": generation,
        }),
    };
    serde_json::json!({ "conditions": [condition] })
}

/// Inserts or updates one object; returns its key when it is valid (or an
/// older valid version of it stays).
fn upsert(
    s: &mut State,
    kind: Kind,
    obj: DynamicObject,
    events: &mut Vec<WatchEvent>,
) -> Option<ResourceKey> {
    let generation = obj.metadata.generation.unwrap_or(1);
    let (ns, name) = (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    );
    let new = match convert(kind, obj) {
        Ok(n) => n,
        Err(error) => {
            tracing::warn!(kind = kind.as_str(), namespace = %ns, name = %name, %error,
                "skipping invalid custom resource (its last valid version, if any, stays); fix it with kubectl");
            let key = ResourceKey {
                kind: kind.as_str().to_string(),
                namespace: ns,
                name,
            };
            return s.objects.contains_key(&key).then_some(key);
        }
    };
    let event_type = match s.objects.get(&new.key) {
        Some(p) if without_stamps(&p.object) == without_stamps(&new.object) => {
            return Some(new.key);
        }
        Some(_) => EventType::Modified,
        None => EventType::Added,
    };
    s.version += 1;
    let mut object = new.object;
    stamp(&mut object, generation, s.version);
    let stored = StoredObject {
        key: new.key.clone(),
        generation,
        resource_version: s.version,
        object,
    };
    events.push(WatchEvent {
        event_type,
        object: stored.clone(),
    });
    s.objects.insert(new.key.clone(), stored);
    Some(new.key)
}

fn remove(s: &mut State, key: &ResourceKey, events: &mut Vec<WatchEvent>) {
    if let Some(mut gone) = s.objects.remove(key) {
        s.version += 1;
        gone.resource_version = s.version;
        events.push(WatchEvent {
            event_type: EventType::Deleted,
            object: gone,
        });
    }
}

/// What the management API answers to writes in Kubernetes mode.
pub const READ_ONLY_HINT: &str = "kubernetes (the API server's custom resources); change config with `kubectl apply -f` / `kubectl delete` instead of meshctl apply/delete";

impl ConfigStore for KubeStore {
    fn list<'a>(
        &'a self,
        kind: Option<&'a str>,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredObject>, StoreError>> {
        let s = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        let out = s
            .objects
            .values()
            .filter(|o| kind.is_none_or(|k| o.key.kind == k))
            .filter(|o| namespace.is_none_or(|n| o.key.namespace == n))
            .cloned()
            .collect();
        futures_util::future::ready(Ok(out)).boxed()
    }

    fn get<'a>(
        &'a self,
        key: &'a ResourceKey,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        let s = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        futures_util::future::ready(Ok(s.objects.get(key).cloned())).boxed()
    }

    fn apply(&self, _: Vec<NewObject>) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        futures_util::future::ready(Err(StoreError::ReadOnly(READ_ONLY_HINT.into()))).boxed()
    }

    fn delete(&self, _: Vec<ResourceKey>) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        futures_util::future::ready(Err(StoreError::ReadOnly(READ_ONLY_HINT.into()))).boxed()
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.inner.events.subscribe()
    }

    fn describe(&self) -> String {
        "kubernetes".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop", "resourceVersion": "7"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn invalid_custom_resource_is_reported_with_its_name_and_field_path() {
        let bad = object(
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews"}, "weight": 70},
            {"destination": {"host": "ratings"}, "weight": 20}]}]}),
        );
        let err = convert(Kind::VirtualService, bad).unwrap_err();
        assert!(err.starts_with("VirtualService shop/reviews: "), "{err}");
        assert!(err.contains("spec.http[0]"), "{err}");
        let typo = object(serde_json::json!({"hostz": ["reviews"]}));
        let err = convert(Kind::VirtualService, typo).unwrap_err();
        assert!(err.contains("hostz"), "{err}");
    }

    #[test]
    fn invalid_update_keeps_the_last_valid_version() {
        let store = KubeStore::new();
        let good = object(
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews"}}]}]}),
        );
        store.replace_kind(Kind::VirtualService, vec![good]);
        store.apply_object(
            Kind::VirtualService,
            object(serde_json::json!({"hostz": ["reviews"]})),
        );
        let s = store.inner.state.read().unwrap();
        let kept = s.objects.values().next().unwrap();
        assert_eq!(kept.object["spec"]["hosts"][0], "reviews");
    }
}
