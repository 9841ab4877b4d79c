//! A read-only config source: a directory of YAML/JSON files, polled for
//! changes (file names, sizes and mtimes) about once a second. A directory
//! that fails to parse keeps the last good state and logs why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use super::{
    ConfigStore, EventType, NewObject, ResourceKey, StoreError, StoredObject, WatchEvent,
    WriteResult, spec_of, stamp, without_stamps,
};

/// How often the directory is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ResourceKey, StoredObject>,
    version: i64,
    fingerprint: Fingerprint,
    last_error: Option<String>,
}

/// Directory-backed, read-only [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct FilesStore {
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<WatchEvent>,
    // Serialises reloads (the poller and explicit `reload` calls).
    reload_lock: Arc<Mutex<()>>,
}

impl FilesStore {
    /// Reads `dir` once; fails if the first read fails (so a typo is seen at
    /// start, not silently served as empty config).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (events, _) = broadcast::channel(4096);
        let store = Self {
            dir: dir.to_path_buf(),
            state: Arc::new(RwLock::new(State::default())),
            events,
            reload_lock: Arc::new(Mutex::new(())),
        };
        store.reload()?;
        Ok(store)
    }

    /// Spawns the poller; it stops when the returned handle is aborted.
    pub fn spawn_poller(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = this.clone();
                // File reads are blocking; keep them off the async workers.
                let res = tokio::task::spawn_blocking(move || t.reload()).await;
                match res {
                    Ok(Err(e)) => {
                        tracing::warn!(dir = %this.dir.display(), error = %e, "config dir reload failed; keeping last good config")
                    }
                    Err(e) => tracing::warn!(error = %e, "config dir reload task failed"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }

    /// The last reload error, if the directory is currently broken.
    pub fn last_error(&self) -> Option<String> {
        self.state.read().ok().and_then(|s| s.last_error.clone())
    }

    /// Re-reads the directory if anything changed; returns whether it did.
    pub fn reload(&self) -> Result<bool, StoreError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let fingerprint = fingerprint(&self.dir)?;
        if self
            .state
            .read()
            .map(|s| s.fingerprint == fingerprint && s.version > 0)
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let parsed = match read_all(&fingerprint) {
            Ok(p) => p,
            Err(e) => {
                if let Ok(mut s) = self.state.write() {
                    s.fingerprint = fingerprint;
                    s.last_error = Some(e.to_string());
                }
                return Err(e);
            }
        };
        let mut events = Vec::new();
        {
            let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
            s.fingerprint = fingerprint;
            s.last_error = None;
            // Version 0 means "never loaded": bump it even for an empty dir.
            if s.version == 0 {
                s.version = 1;
            }
            let old = std::mem::take(&mut s.objects);
            let mut next = BTreeMap::new();
            for new in parsed {
                let prev = old.get(&new.key);
                let (generation, event) = match prev {
                    Some(p) if without_stamps(&p.object) == without_stamps(&new.object) => {
                        next.insert(new.key.clone(), p.clone());
                        continue;
                    }
                    Some(p) if spec_of(&p.object) == spec_of(&new.object) => {
                        (p.generation, EventType::Modified)
                    }
                    Some(p) => (p.generation + 1, EventType::Modified),
                    None => (1, EventType::Added),
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
                    event_type: event,
                    object: stored.clone(),
                });
                next.insert(new.key, stored);
            }
            for (key, mut gone) in old {
                if !next.contains_key(&key) {
                    s.version += 1;
                    gone.resource_version = s.version;
                    events.push(WatchEvent {
                        event_type: EventType::Deleted,
                        object: gone,
                    });
                }
            }
            s.objects = next;
        }
        let changed = !events.is_empty();
        for e in events {
            let _ = self.events.send(e);
        }
        Ok(changed)
    }
}

fn fingerprint(dir: &Path) -> Result<Fingerprint, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let meta = entry.metadata().map_err(io)?;
        if meta.is_file() {
            out.push((path, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_all(files: &Fingerprint) -> Result<Vec<NewObject>, StoreError> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (path, _, _) in files {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match crate::documents::parse(&text, &path.display().to_string()) {
            Ok(objs) => all.extend(objs),
            Err(es) => errors.extend(es),
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(StoreError::Invalid(errors))
    }
}

impl ConfigStore for FilesStore {
    fn list<'a>(
        &'a self,
        kind: Option<&'a str>,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredObject>, StoreError>> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
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
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        futures_util::future::ready(Ok(s.objects.get(key).cloned())).boxed()
    }

    fn apply(&self, _: Vec<NewObject>) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        futures_util::future::ready(Err(StoreError::ReadOnly(format!(
            "{} (edit the files instead)",
            self.describe()
        ))))
        .boxed()
    }

    fn delete(&self, _: Vec<ResourceKey>) -> BoxFuture<'_, Result<Vec<WriteResult>, StoreError>> {
        futures_util::future::ready(Err(StoreError::ReadOnly(format!(
            "{} (edit the files instead)",
            self.describe()
        ))))
        .boxed()
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    fn describe(&self) -> String {
        format!("files:{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: default\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

    #[tokio::test]
    async fn files_dir_is_listed_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let store = FilesStore::open(dir.path()).unwrap();
        let all = store.list(None, None).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].key.kind, "VirtualService");
        assert!(matches!(
            store.apply(vec![]).await,
            Err(StoreError::ReadOnly(_))
        ));
    }

    #[tokio::test]
    async fn file_change_is_seen_as_watch_events() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.yaml");
        std::fs::write(&file, VS).unwrap();
        let store = FilesStore::open(dir.path()).unwrap();
        let mut rx = store.watch();
        std::fs::write(&file, VS.replace("[reviews]", "[reviews, ratings]")).unwrap();
        assert!(store.reload().unwrap());
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.event_type, EventType::Modified);
        assert_eq!(ev.object.generation, 2);
        std::fs::remove_file(&file).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(rx.try_recv().unwrap().event_type, EventType::Deleted);
        assert!(store.list(None, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn broken_file_keeps_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.yaml");
        std::fs::write(&file, VS).unwrap();
        let store = FilesStore::open(dir.path()).unwrap();
        std::fs::write(&file, "kind: VirtualService\nmetadata: {}\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.list(None, None).await.unwrap().len(), 1);
        assert!(store.last_error().unwrap().contains("apiVersion"));
    }

    #[tokio::test(start_paused = true)]
    async fn poller_picks_up_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesStore::open(dir.path()).unwrap();
        let mut rx = store.watch();
        let poller = store.spawn_poller();
        std::fs::write(dir.path().join("vs.yaml"), VS).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.event_type, EventType::Added);
        poller.abort();
    }
}
