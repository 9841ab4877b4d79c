//! The embedded default store: one SQLite file, written through the
//! management API. Every write is one transaction, so a failed batch leaves
//! nothing behind.

use std::path::Path;
use std::str::FromStr;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use tokio::sync::broadcast;

use super::{
    ConfigStore, EventType, NewObject, Outcome, ResourceKey, StoreError, StoredObject, WatchEvent,
    WriteResult, spec_of, stamp, without_stamps,
};

/// How many watch events a slow watcher may fall behind before it must
/// re-list.
const WATCH_BUFFER: usize = 4096;

/// SQLite-backed [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<WatchEvent>,
    location: String,
}

impl SqliteStore {
    /// Opens (creating if needed) `mesh.db` in `data_dir` and runs the
    /// embedded migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("mesh.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        Self::init(pool, format!("sqlite:{}", path.display())).await
    }

    /// An in-memory store (tests, benchmarks).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to :memory: is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Self::init(pool, "sqlite::memory:".into()).await
    }

    async fn init(pool: SqlitePool, location: String) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Ok(Self {
            pool,
            events,
            location,
        })
    }

    /// The connection pool (the VIP allocator shares the database).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn list_impl(
        &self,
        kind: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, namespace, name, generation, resource_version, object FROM resources \
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR namespace = ?2) \
             ORDER BY kind, namespace, name",
        )
        .bind(kind)
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_object).collect()
    }

    async fn get_impl(&self, key: &ResourceKey) -> Result<Option<StoredObject>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, namespace, name, generation, resource_version, object FROM resources \
             WHERE kind = ? AND namespace = ? AND name = ?",
        )
        .bind(&key.kind)
        .bind(&key.namespace)
        .bind(&key.name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_object).transpose()
    }

    async fn apply_impl(&self, objects: Vec<NewObject>) -> Result<Vec<WriteResult>, StoreError> {
        // IMMEDIATE: take the write lock up front, so a concurrent writer makes
        // us wait (busy_timeout) instead of failing on lock upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(objects.len());
        let mut events = Vec::new();
        for new in objects {
            let key = new.key.clone();
            let existing = sqlx::query(
                "SELECT kind, namespace, name, generation, resource_version, object FROM resources \
                 WHERE kind = ? AND namespace = ? AND name = ?",
            )
            .bind(&key.kind)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&mut *tx)
            .await?;
            let existing = existing.as_ref().map(row_to_object).transpose()?;
            let (generation, outcome) = match &existing {
                None => (1, Outcome::Created),
                Some(old) if without_stamps(&old.object) == without_stamps(&new.object) => {
                    results.push(WriteResult {
                        key,
                        outcome: Outcome::Unchanged,
                        generation: old.generation,
                        resource_version: old.resource_version,
                    });
                    continue;
                }
                Some(old) if spec_of(&old.object) == spec_of(&new.object) => {
                    (old.generation, Outcome::Configured)
                }
                Some(old) => (old.generation + 1, Outcome::Configured),
            };
            let rv = next_version(&mut tx).await?;
            let mut object = new.object;
            stamp(&mut object, generation, rv);
            sqlx::query(
                "INSERT INTO resources (kind, namespace, name, generation, resource_version, object) \
                 VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (kind, namespace, name) DO UPDATE SET \
                 generation = excluded.generation, resource_version = excluded.resource_version, \
                 object = excluded.object",
            )
            .bind(&key.kind)
            .bind(&key.namespace)
            .bind(&key.name)
            .bind(generation)
            .bind(rv)
            .bind(serde_json::to_string(&object)?)
            .execute(&mut *tx)
            .await?;
            events.push(WatchEvent {
                event_type: if existing.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                object: StoredObject {
                    key: key.clone(),
                    generation,
                    resource_version: rv,
                    object,
                },
            });
            results.push(WriteResult {
                key,
                outcome,
                generation,
                resource_version: rv,
            });
        }
        tx.commit().await?;
        self.publish(events);
        Ok(results)
    }

    async fn delete_impl(&self, keys: Vec<ResourceKey>) -> Result<Vec<WriteResult>, StoreError> {
        // IMMEDIATE: take the write lock up front, so a concurrent writer makes
        // us wait (busy_timeout) instead of failing on lock upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(keys.len());
        let mut events = Vec::new();
        for key in keys {
            let row = sqlx::query(
                "DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ? \
                 RETURNING kind, namespace, name, generation, resource_version, object",
            )
            .bind(&key.kind)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&mut *tx)
            .await?;
            match row.as_ref().map(row_to_object).transpose()? {
                None => results.push(WriteResult {
                    key,
                    outcome: Outcome::NotFound,
                    generation: 0,
                    resource_version: 0,
                }),
                Some(mut old) => {
                    let rv = next_version(&mut tx).await?;
                    old.resource_version = rv;
                    stamp(&mut old.object, old.generation, rv);
                    results.push(WriteResult {
                        key,
                        outcome: Outcome::Deleted,
                        generation: 0,
                        resource_version: rv,
                    });
                    events.push(WatchEvent {
                        event_type: EventType::Deleted,
                        object: old,
                    });
                }
            }
        }
        tx.commit().await?;
        self.publish(events);
        Ok(results)
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        for event in events {
            // Err only means nobody is watching right now.
            let _ = self.events.send(event);
        }
    }
}

async fn next_version(tx: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "UPDATE counters SET value = value + 1 WHERE name = 'resource_version' RETURNING value",
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

fn row_to_object(row: &sqlx::sqlite::SqliteRow) -> Result<StoredObject, StoreError> {
    let text: String = row.try_get("object")?;
    Ok(StoredObject {
        key: ResourceKey {
            kind: row.try_get("kind")?,
            namespace: row.try_get("namespace")?,
            name: row.try_get("name")?,
        },
        generation: row.try_get("generation")?,
        resource_version: row.try_get("resource_version")?,
        object: serde_json::from_str(&text)?,
    })
}

impl ConfigStore for SqliteStore {
    fn list<'a>(
        &'a self,
        kind: Option<&'a str>,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredObject>, StoreError>> {
        self.list_impl(kind, namespace).boxed()
    }

    fn get<'a>(
        &'a self,
        key: &'a ResourceKey,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        self.get_impl(key).boxed()
    }

    fn apply(
        &self,
        objects: Vec<NewObject>,
    ) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        self.apply_impl(objects).boxed()
    }

    fn delete(
        &self,
        keys: Vec<ResourceKey>,
    ) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        self.delete_impl(keys).boxed()
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    fn describe(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, spec: serde_json::Value) -> NewObject {
        NewObject {
            key: ResourceKey {
                kind: "VirtualService".into(),
                namespace: "default".into(),
                name: name.into(),
            },
            object: json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }),
        }
    }

    #[tokio::test]
    async fn apply_then_get_and_list_round_trip() {
        let store = SqliteStore::in_memory().await.unwrap();
        let r = store
            .apply(vec![obj("a", json!({"hosts": ["a"]})), obj("b", json!({}))])
            .await
            .unwrap();
        assert_eq!(r[0].outcome, Outcome::Created);
        assert_eq!(r[0].generation, 1);
        let got = store.get(&r[1].key).await.unwrap().unwrap();
        assert_eq!(got.object["metadata"]["resourceVersion"], "2");
        let all = store.list(Some("VirtualService"), None).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(
            store
                .list(Some("DestinationRule"), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.list(None, Some("other")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn generation_bumps_only_when_spec_changes() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.apply(vec![obj("a", json!({"x": 1}))]).await.unwrap();
        let same = store.apply(vec![obj("a", json!({"x": 1}))]).await.unwrap();
        assert_eq!(same[0].outcome, Outcome::Unchanged);
        assert_eq!(same[0].generation, 1);
        let changed = store.apply(vec![obj("a", json!({"x": 2}))]).await.unwrap();
        assert_eq!(changed[0].outcome, Outcome::Configured);
        assert_eq!(changed[0].generation, 2);
        let mut labelled = obj("a", json!({"x": 2}));
        labelled.object["metadata"]["labels"] = json!({"k": "v"});
        let meta_only = store.apply(vec![labelled]).await.unwrap();
        assert_eq!(
            meta_only[0].generation, 2,
            "metadata change keeps generation"
        );
        assert!(meta_only[0].resource_version > changed[0].resource_version);
    }

    #[tokio::test]
    async fn resource_version_is_global_and_monotonic_across_deletes() {
        let store = SqliteStore::in_memory().await.unwrap();
        let a = store.apply(vec![obj("a", json!({}))]).await.unwrap();
        let d = store.delete(vec![a[0].key.clone()]).await.unwrap();
        assert_eq!(d[0].outcome, Outcome::Deleted);
        let b = store.apply(vec![obj("a", json!({}))]).await.unwrap();
        assert!(b[0].resource_version > d[0].resource_version);
        assert!(d[0].resource_version > a[0].resource_version);
        let missing = store
            .delete(vec![ResourceKey {
                kind: "VirtualService".into(),
                namespace: "default".into(),
                name: "nope".into(),
            }])
            .await
            .unwrap();
        assert_eq!(missing[0].outcome, Outcome::NotFound);
    }

    #[tokio::test]
    async fn watchers_see_added_modified_deleted() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut rx = store.watch();
        let r = store.apply(vec![obj("a", json!({"x": 1}))]).await.unwrap();
        store.apply(vec![obj("a", json!({"x": 2}))]).await.unwrap();
        store.delete(vec![r[0].key.clone()]).await.unwrap();
        let kinds: Vec<EventType> = (0..3).map(|_| rx.try_recv().unwrap().event_type).collect();
        assert_eq!(
            kinds,
            vec![EventType::Added, EventType::Modified, EventType::Deleted]
        );
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.apply(vec![obj("a", json!({"x": 1}))]).await.unwrap();
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.list(None, None).await.unwrap().len(), 1);
        let r = store.apply(vec![obj("b", json!({}))]).await.unwrap();
        assert_eq!(r[0].resource_version, 2);
    }
}
