//! Config stores: where meshd's resources live.
//!
//! Every source (SQLite written through the management API, a read-only
//! directory of YAML files, later Kubernetes) implements [`ConfigStore`].
//! Resources are kept whole, as the JSON of the typed model object, keyed by
//! kind/namespace/name; the store adds `metadata.generation` (bumped when the
//! spec changes) and `metadata.resourceVersion` (a global counter).

pub mod files;
pub mod sqlite;

use std::fmt;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use files::FilesStore;
pub use sqlite::SqliteStore;

/// Identifies one resource: its kind (canonical, e.g. `VirtualService`), its
/// namespace and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    /// Canonical kind, e.g. `VirtualService`.
    pub kind: String,
    /// Namespace (`default` when the document had none).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A resource as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// kind/namespace/name.
    pub key: ResourceKey,
    /// Bumped each time the spec changes; starts at 1.
    pub generation: i64,
    /// The global counter value of the last write to this resource.
    pub resource_version: i64,
    /// The whole object (apiVersion, kind, metadata, spec), with
    /// `metadata.generation` and `metadata.resourceVersion` filled in.
    pub object: serde_json::Value,
}

/// A validated resource ready to be written (see [`crate::model_glue`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewObject {
    /// kind/namespace/name.
    pub key: ResourceKey,
    /// The whole object as JSON; the store overwrites generation and
    /// resourceVersion.
    pub object: serde_json::Value,
}

/// What one write did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The resource did not exist.
    Created,
    /// The resource existed and changed.
    Configured,
    /// The resource existed and is identical.
    Unchanged,
    /// The resource was removed.
    Deleted,
    /// A delete of a resource that did not exist.
    NotFound,
}

/// The result of a write for one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Which resource.
    pub key: ResourceKey,
    /// What happened to it.
    pub outcome: Outcome,
    /// Its generation after the write (0 when deleted / not found).
    pub generation: i64,
    /// Its resourceVersion after the write (the delete's version when deleted).
    pub resource_version: i64,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// A new resource.
    Added,
    /// A changed resource.
    Modified,
    /// A removed resource (the event carries its last state).
    Deleted,
}

/// One change seen by watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The resource after the change (before it, for deletes).
    pub object: StoredObject,
}

/// Errors of a config store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Embedded migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored object could not be (de)serialized.
    #[error("stored object is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The store is read-only (the files source, Kubernetes); the string
    /// names the source and says where to make changes instead.
    #[error("this config source is read-only: {0}")]
    ReadOnly(String),
    /// Documents were rejected by validation; nothing was written.
    #[error("invalid resources: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Reading the config directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A source of config resources. Object-safe so meshd can pick one at start.
pub trait ConfigStore: Send + Sync + fmt::Debug {
    /// Lists resources, optionally of one kind and/or one namespace, ordered
    /// by kind, namespace, name.
    fn list<'a>(
        &'a self,
        kind: Option<&'a str>,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredObject>, StoreError>>;

    /// Reads one resource.
    fn get<'a>(
        &'a self,
        key: &'a ResourceKey,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>>;

    /// Writes validated resources all-or-nothing, in one transaction.
    fn apply(&self, objects: Vec<NewObject>)
    -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>>;

    /// Deletes resources all-or-nothing.
    fn delete(&self, keys: Vec<ResourceKey>)
    -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>>;

    /// Subscribes to changes made after this call. Subscribe, then `list`, to
    /// see every state.
    fn watch(&self) -> broadcast::Receiver<WatchEvent>;

    /// A short description for logs and `/debug` (e.g. `sqlite:/path`).
    fn describe(&self) -> String;
}

/// Sets `metadata.generation` and `metadata.resourceVersion` on an object.
pub(crate) fn stamp(object: &mut serde_json::Value, generation: i64, resource_version: i64) {
    if let Some(obj) = object.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("generation".into(), generation.into());
            meta.insert(
                "resourceVersion".into(),
                resource_version.to_string().into(),
            );
        }
    }
}

/// The parts of an object that count as its spec for generation bumps:
/// everything except metadata and status.
pub(crate) fn spec_of(object: &serde_json::Value) -> serde_json::Value {
    object
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// The object without the store's own fields, to detect no-op writes.
pub(crate) fn without_stamps(object: &serde_json::Value) -> serde_json::Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("generation");
        meta.remove("resourceVersion");
    }
    o
}
