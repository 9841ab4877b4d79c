//! Generated configs per proxy class, shared by every stream of the class
//! and updated incrementally: an endpoint-only snapshot regenerates only the
//! affected clusters and load assignments, and each type's resources carry
//! the names that changed since the previous set, computed once per class so
//! that a stream can push a change without walking everything it has.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::wire::resource_field;
use crate::translate::{self, CLUSTER_TYPE, ENDPOINT_TYPE, Generated, ProxyConfig};

static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// Hashes a name id ([`translate::name_id`], already an FNV-1a hash) as
/// itself: maps and sets keyed by name ids are probed for every resource
/// of every stream, and SipHash over them showed in profiles.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for ids; other input is folded in FNV's
        // way so that the hasher stays correct for any key.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A map keyed by name ids.
pub type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A set of name ids.
pub type IdSet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>;

/// The resources of one type for one proxy class, immutable once built.
#[derive(Debug)]
pub struct TypeSet {
    /// Unique id of this set (process-wide).
    pub id: u64,
    /// The resources, by name.
    pub resources: BTreeMap<String, Generated>,
    /// The set this one replaced for the class and the names that differ
    /// from it (added, changed or removed).
    pub delta_from: Option<(u64, Vec<String>)>,
    /// Each resource encoded once for delta responses
    /// ([`resource_field`]), by name id.
    wire: IdMap<Bytes>,
    version: OnceLock<String>,
}

impl TypeSet {
    fn new(resources: BTreeMap<String, Generated>, delta_from: Option<(u64, Vec<String>)>) -> Self {
        let wire = resources
            .iter()
            .map(|(name, g)| (g.name_id, resource_field(name, g)))
            .collect();
        Self::with_wire(resources, delta_from, wire)
    }

    fn with_wire(
        resources: BTreeMap<String, Generated>,
        delta_from: Option<(u64, Vec<String>)>,
        wire: IdMap<Bytes>,
    ) -> Self {
        Self {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            resources,
            delta_from,
            wire,
            version: OnceLock::new(),
        }
    }

    /// The resource `name` as a delta response's `resources` field, encoded
    /// once for every stream.
    pub fn wire(&self, name: &str, g: &Generated) -> Bytes {
        self.wire
            .get(&g.name_id)
            .cloned()
            .unwrap_or_else(|| resource_field(name, g))
    }

    /// The resource whose name has id `id` ([`translate::name_id`]) as a
    /// delta response's `resources` field, if the set has it.
    pub fn wire_by_id(&self, id: u64) -> Option<Bytes> {
        self.wire.get(&id).cloned()
    }

    /// The version of the whole set ([`translate::set_version`]), computed
    /// once.
    pub fn version(&self) -> &str {
        self.version
            .get_or_init(|| translate::set_version(&self.resources))
    }

    /// The names that differ between `older` and this set, if this set was
    /// derived from it.
    pub fn changes_since(&self, older: &TypeSet) -> Option<&[String]> {
        match &self.delta_from {
            Some((id, names)) if *id == older.id => Some(names),
            _ => None,
        }
    }
}

/// A proxy class's config for one snapshot: one [`TypeSet`] per type URL.
#[derive(Debug)]
pub struct ClassConfig {
    /// The snapshot it was generated from.
    pub snapshot_version: u64,
    types: BTreeMap<&'static str, Arc<TypeSet>>,
}

impl ClassConfig {
    /// The resources of `ty` (an empty set for a type with none).
    pub fn get(&self, ty: &str) -> Option<&Arc<TypeSet>> {
        self.types.get(ty)
    }

    /// Wraps a full translation. Types whose resources equal `prev`'s keep
    /// `prev`'s set (streams then skip them); the others name what changed.
    pub fn full(snapshot_version: u64, config: ProxyConfig, prev: Option<&ClassConfig>) -> Self {
        let mut types = BTreeMap::new();
        for (ty, resources) in config {
            let old = prev.and_then(|p| p.types.get(ty));
            let set = match old {
                Some(old) => {
                    let changed = diff(&old.resources, &resources);
                    if changed.is_empty() {
                        old.clone()
                    } else {
                        Arc::new(TypeSet::new(resources, Some((old.id, changed))))
                    }
                }
                None => Arc::new(TypeSet::new(resources, None)),
            };
            types.insert(ty, set);
        }
        Self {
            snapshot_version,
            types,
        }
    }

    /// `prev` with some clusters and load assignments replaced (from
    /// [`translate::endpoint_resources`]); other types are shared as they are.
    pub fn with_endpoints(
        prev: &ClassConfig,
        snapshot_version: u64,
        clusters: BTreeMap<String, Generated>,
        assignments: BTreeMap<String, Generated>,
    ) -> Self {
        let mut types = prev.types.clone();
        for (ty, updates) in [(CLUSTER_TYPE, clusters), (ENDPOINT_TYPE, assignments)] {
            let Some(old) = prev.types.get(ty) else {
                types.insert(ty, Arc::new(TypeSet::new(updates, None)));
                continue;
            };
            let changed: Vec<String> = updates
                .iter()
                .filter(|(name, g)| {
                    old.resources.get(*name).map(|o| o.version_id) != Some(g.version_id)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if changed.is_empty() {
                continue;
            }
            let mut resources = old.resources.clone();
            for (name, g) in updates {
                resources.insert(name, g);
            }
            types.insert(
                ty,
                Arc::new(TypeSet::new(resources, Some((old.id, changed)))),
            );
        }
        Self {
            snapshot_version,
            types,
        }
    }
}

/// Names added, changed or removed between two sorted maps.
fn diff(old: &BTreeMap<String, Generated>, new: &BTreeMap<String, Generated>) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((n, _)), None) => {
                out.push((*n).clone());
                a.next();
            }
            (None, Some((n, _))) => {
                out.push((*n).clone());
                b.next();
            }
            (Some((na, ga)), Some((nb, gb))) => match na.cmp(nb) {
                std::cmp::Ordering::Less => {
                    out.push((*na).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*nb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ga.version_id != gb.version_id {
                        out.push((*nb).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::test_support::{proxy, snapshot};
    use crate::translate::{LISTENER_TYPE, ROUTE_TYPE, generate};

    const YAML: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1, security.istio.io/tlsMode: istio}, serviceAccount: a}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec:
  hosts: [b]
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec: {host: a, subsets: [{name: v1, labels: {version: v1}}]}
";

    #[tokio::test]
    async fn endpoint_update_equals_a_full_translation_and_names_only_what_changed() {
        let p = proxy();
        let before = snapshot(YAML).await;
        let base = ClassConfig::full(1, generate(&before, &p), None);
        // a's endpoints change: a new address and a new service account
        // (which changes a's clusters: their SANs).
        let after = snapshot(&YAML.replace(
            "serviceAccount: a}]",
            "serviceAccount: a}, {address: 10.0.0.2, labels: {version: v1, security.istio.io/tlsMode: istio}, serviceAccount: a2}]",
        ))
        .await;
        let hosts = ["a.default.svc.cluster.local".to_string()].into();
        let (clusters, assignments) = translate::endpoint_resources(&after, &p, &hosts);
        let next = ClassConfig::with_endpoints(&base, 2, clusters, assignments);
        let fresh = generate(&after, &p);
        for (ty, resources) in &fresh {
            assert_eq!(&next.get(ty).unwrap().resources, resources, "{ty}");
        }
        for ty in [LISTENER_TYPE, ROUTE_TYPE] {
            assert!(Arc::ptr_eq(next.get(ty).unwrap(), base.get(ty).unwrap()));
        }
        let eds = next.get(ENDPOINT_TYPE).unwrap();
        let mut changed = eds
            .changes_since(base.get(ENDPOINT_TYPE).unwrap())
            .unwrap()
            .to_vec();
        changed.sort();
        assert_eq!(
            changed,
            [
                "outbound|80|v1|a.default.svc.cluster.local",
                "outbound|80||a.default.svc.cluster.local"
            ]
        );
        let cds = next.get(CLUSTER_TYPE).unwrap();
        assert_eq!(
            cds.changes_since(base.get(CLUSTER_TYPE).unwrap())
                .unwrap()
                .len(),
            2,
            "the SANs of both of a's clusters"
        );
    }

    #[tokio::test]
    async fn a_full_translation_keeps_unchanged_types_and_diffs_the_rest() {
        let p = proxy();
        let base = ClassConfig::full(1, generate(&*snapshot(YAML).await, &p), None);
        let same = ClassConfig::full(2, generate(&*snapshot(YAML).await, &p), Some(&base));
        for ty in translate::PUSH_ORDER {
            assert!(Arc::ptr_eq(same.get(ty).unwrap(), base.get(ty).unwrap()));
        }
        let without_b = YAML.replace("hosts: [b]", "hosts: [c]");
        let next = ClassConfig::full(3, generate(&*snapshot(&without_b).await, &p), Some(&same));
        let cds = next.get(CLUSTER_TYPE).unwrap();
        let changed = cds.changes_since(same.get(CLUSTER_TYPE).unwrap()).unwrap();
        assert_eq!(
            changed,
            [
                "outbound|80||b.default.svc.cluster.local",
                "outbound|80||c.default.svc.cluster.local"
            ]
        );
    }
}
