//! Load balancing over a cluster's endpoints: weighted round robin, least
//! request (power of two choices) and weighted random, honouring EDS health.
//! Per-cluster state (round-robin cursor, in-flight counts) outlives config
//! snapshots so that a config push does not reset the rotation.

pub mod hash;
pub mod locality;
pub mod pool;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::config::{CircuitBreaker, Cluster, Endpoint, Health, LbPolicy, LoadAssignment};
use hash::Table;

/// Envoy's default `max_retries` when the cluster sets no threshold.
const DEFAULT_MAX_RETRIES: u32 = 3;

/// Balancer state for one cluster.
#[derive(Debug, Default)]
pub struct ClusterLb {
    cursor: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
    /// Passive outlier detection state.
    pub outliers: crate::outlier::Outliers,
    active: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    tables: Mutex<Vec<CachedTable>>,
    /// HTTP/1.1 connection slots (`max_connections`, `max_pending_requests`).
    pub connections: Arc<pool::ConnectionSlots>,
}

/// Hash tables kept per cluster: one per endpoint set in use (a priority
/// spilling over to the next alternates between two sets).
const CACHED_TABLES: usize = 4;

/// A consistent-hash table and the endpoint set it was built for.
#[derive(Debug)]
struct CachedTable {
    policy: LbPolicy,
    size: u64,
    hosts: Vec<(SocketAddr, u32)>,
    table: Arc<Table>,
}

/// How to pick, beyond the endpoints themselves.
#[derive(Debug, Clone, Copy)]
pub struct PickOptions {
    /// The algorithm.
    pub policy: LbPolicy,
    /// Below this percentage of usable endpoints, use them all (panic).
    pub panic_threshold: f64,
    /// The request's hash key, for RING_HASH and MAGLEV.
    pub hash: Option<u64>,
    /// Ring or Maglev table size.
    pub table_size: Option<u64>,
    /// Pick a locality by its weight before an endpoint inside it
    /// (`locality_weighted_lb_config`).
    pub locality_weighted: bool,
}

impl PickOptions {
    /// The cluster's settings, without a hash key.
    pub fn of(cluster: &Cluster) -> Self {
        Self {
            policy: cluster.lb_policy,
            panic_threshold: cluster.healthy_panic_threshold,
            hash: None,
            table_size: cluster.hash_table_size,
            locality_weighted: cluster.locality_weighted,
        }
    }
}

/// Marks one in-flight request to an endpoint; dropping it ends the request
/// for least-request accounting.
#[derive(Debug)]
pub struct ActiveRequest {
    counter: Arc<AtomicUsize>,
    /// The endpoint picked.
    pub address: SocketAddr,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints eligible for new requests: healthy ones, or degraded ones
/// when nothing is healthy (Envoy's fallback). Draining and unhealthy
/// endpoints never qualify. Only the highest priority that has any is used.
pub fn eligible(assignment: &LoadAssignment) -> Vec<&Endpoint> {
    for wanted in [Health::Healthy, Health::Degraded] {
        let candidates: Vec<&Endpoint> = assignment
            .endpoints
            .iter()
            .filter(|e| e.health == wanted)
            .collect();
        if let Some(top) = candidates.iter().map(|e| e.priority).min() {
            return candidates
                .into_iter()
                .filter(|e| e.priority == top)
                .collect();
        }
    }
    Vec::new()
}

/// The health of each priority: endpoints usable for this pick out of all
/// the priority's endpoints.
fn priority_health(
    assignment: &LoadAssignment,
    usable: &[&Endpoint],
) -> Vec<locality::PriorityHealth> {
    let mut levels: std::collections::BTreeMap<u32, locality::PriorityHealth> =
        std::collections::BTreeMap::new();
    for e in &assignment.endpoints {
        levels
            .entry(e.priority)
            .or_insert(locality::PriorityHealth {
                priority: e.priority,
                usable: 0,
                total: 0,
            })
            .total += 1;
    }
    for e in usable {
        if let Some(l) = levels.get_mut(&e.priority) {
            l.usable += 1;
        }
    }
    levels.into_values().collect()
}

/// One admitted request (or connection) under the cluster's circuit
/// breaker; dropping it releases the slot.
#[derive(Debug)]
pub struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterLb {
    /// Admits one more request unless `max` are already in flight
    /// (`None` when the breaker is open: Envoy's `UO`).
    pub fn admit(&self, max: Option<u32>) -> Option<Admission> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let admission = Admission(self.in_flight.clone());
        match max {
            Some(m) if now >= m as usize => None,
            _ => Some(admission),
        }
    }

    /// Admits one more concurrent retry: under a retry budget at most
    /// `budget_percent` of the requests in flight (but at least
    /// `min_retry_concurrency`), otherwise at most `max_retries` (Envoy's
    /// default 3). `None`: the retry overflows and is not sent.
    pub fn admit_retry(&self, cb: Option<&CircuitBreaker>) -> Option<Admission> {
        let limit = match cb.and_then(|c| c.retry_budget.as_ref()) {
            Some(b) => {
                let active = self.in_flight.load(Ordering::Relaxed) as f64;
                let budget = (active * b.budget_percent / 100.0).floor() as usize;
                budget.max(b.min_retry_concurrency as usize)
            }
            None => cb
                .and_then(|c| c.max_retries)
                .unwrap_or(DEFAULT_MAX_RETRIES) as usize,
        };
        let now = self.retries.fetch_add(1, Ordering::Relaxed);
        let admission = Admission(self.retries.clone());
        (now < limit).then_some(admission)
    }

    /// The hash table for `hosts`, built when the set is new.
    fn table(&self, policy: LbPolicy, size: Option<u64>, hosts: &[&Endpoint]) -> Arc<Table> {
        let size = size.unwrap_or(match policy {
            LbPolicy::Maglev => hash::DEFAULT_MAGLEV_SIZE,
            _ => hash::DEFAULT_RING_SIZE,
        });
        let set: Vec<(SocketAddr, u32)> = hosts.iter().map(|e| (e.address, e.weight)).collect();
        let mut cached = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached
            .iter()
            .find(|c| c.policy == policy && c.size == size && c.hosts == set)
        {
            return c.table.clone();
        }
        let table = Arc::new(match policy {
            LbPolicy::Maglev => Table::maglev(&set, size),
            _ => Table::ring(&set, size),
        });
        if cached.len() >= CACHED_TABLES {
            cached.remove(0);
        }
        cached.push(CachedTable {
            policy,
            size,
            hosts: set,
            table: table.clone(),
        });
        table
    }

    fn counter(&self, addr: SocketAddr) -> Arc<AtomicUsize> {
        let mut map = self.active.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr).or_default().clone()
    }

    fn in_flight(&self, addr: SocketAddr) -> usize {
        self.counter(addr).load(Ordering::Relaxed)
    }

    /// Picks an endpoint with Envoy's default panic threshold and no hash
    /// key, or None when none is eligible (`UH`).
    pub fn pick(&self, policy: LbPolicy, assignment: &LoadAssignment) -> Option<ActiveRequest> {
        self.pick_with(
            PickOptions {
                policy,
                panic_threshold: crate::config::DEFAULT_PANIC_THRESHOLD,
                hash: None,
                table_size: None,
                locality_weighted: false,
            },
            assignment,
        )
    }

    /// Picks an endpoint, or None when none is eligible (`UH`). Ejected
    /// outliers sit out unless fewer than `panic_threshold` percent of the
    /// endpoints would be left (panic: balance over all of them, as Envoy
    /// does); with the threshold at 0 there is no panic and a cluster with
    /// every endpoint ejected has none to offer.
    pub fn pick_with(
        &self,
        opts: PickOptions,
        assignment: &LoadAssignment,
    ) -> Option<ActiveRequest> {
        let policy = opts.policy;
        let hashing =
            matches!(policy, LbPolicy::RingHash | LbPolicy::Maglev) && opts.hash.is_some();
        // The common case, decided without building endpoint lists: one
        // priority, every endpoint healthy, none ejected, no locality
        // weights and no hash table. Every step below would keep all the
        // endpoints, so the pick is over them directly.
        let all = &assignment.endpoints;
        if !hashing
            && !opts.locality_weighted
            && all.first().is_some_and(|first| {
                all.iter()
                    .all(|e| e.health == Health::Healthy && e.priority == first.priority)
            })
            && !self.outliers.any_ejected()
        {
            return Some(self.start(self.choose(policy, all, &mut rand::rng())));
        }
        let mut hosts = eligible(assignment);
        if hosts.is_empty() {
            return None;
        }
        // Priority failover counts ejected endpoints as unhealthy: the
        // first priority with a usable endpoint takes the traffic (Istio's
        // locality failover relies on this). Panic is judged over every
        // priority: below the threshold, the top priority's endpoints all
        // get traffic, ejected or not.
        let same_health: Vec<&Endpoint> = assignment
            .endpoints
            .iter()
            .filter(|e| e.health == hosts[0].health)
            .collect();
        let usable: Vec<&Endpoint> = same_health
            .iter()
            .copied()
            .filter(|e| !self.outliers.is_ejected(e.address))
            .collect();
        let panic = (usable.len() as f64) * 100.0 < opts.panic_threshold * same_health.len() as f64;
        let mut rng = rand::rng();
        if !panic {
            // Each priority takes traffic by its health, overprovisioned
            // by 1.4 (Envoy's priority load; see [`locality`]).
            let draw = opts.hash.map_or_else(|| rng.random(), locality::draw_of);
            let chosen = locality::choose_priority(
                &locality::priority_loads(&priority_health(assignment, &usable)),
                draw,
            )?;
            hosts = usable
                .into_iter()
                .filter(|e| e.priority == chosen)
                .collect();
        }
        if opts.locality_weighted && !hashing {
            // A locality of the priority by its weight, then an endpoint
            // inside it; without any weighted locality, the whole priority.
            let priority = hosts[0].priority;
            let all: Vec<&Endpoint> = assignment
                .endpoints
                .iter()
                .filter(|e| e.priority == priority)
                .collect();
            if let Some(inside) = locality::choose_locality(&hosts, &all, &mut rng) {
                hosts = inside;
            }
        }
        let hashed = match (policy, opts.hash) {
            (LbPolicy::RingHash | LbPolicy::Maglev, Some(key)) => self
                .table(policy, opts.table_size, &hosts)
                .lookup(key)
                .and_then(|i| hosts.get(i))
                .map(|e| e.address),
            _ => None,
        };
        let address = match hashed {
            Some(address) => address,
            None => self.choose(policy, &hosts, &mut rng),
        };
        Some(self.start(address))
    }

    /// An endpoint of `hosts` (not empty) by `policy`: weighted round
    /// robin, weighted random, or least request (two random choices,
    /// active requests weighed by endpoint weight, as Envoy does). The hash
    /// policies land here without a key and pick at random.
    fn choose<E: std::borrow::Borrow<Endpoint>>(
        &self,
        policy: LbPolicy,
        hosts: &[E],
        rng: &mut impl Rng,
    ) -> SocketAddr {
        let total: u64 = hosts.iter().map(|e| u64::from(e.borrow().weight)).sum();
        let weighted_at = |mut n: u64| {
            for e in hosts {
                let w = u64::from(e.borrow().weight);
                if n < w {
                    return e.borrow().address;
                }
                n -= w;
            }
            hosts[hosts.len() - 1].borrow().address
        };
        match policy {
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed) as u64;
                weighted_at(n % total.max(1))
            }
            LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => {
                weighted_at(rng.random_range(0..total.max(1)))
            }
            LbPolicy::LeastRequest => {
                let a = hosts[rng.random_range(0..hosts.len())].borrow();
                let b = hosts[rng.random_range(0..hosts.len())].borrow();
                let load = |e: &Endpoint| {
                    (self.in_flight(e.address) as u64 + 1) * 1_000 / u64::from(e.weight.max(1))
                };
                if load(b) < load(a) {
                    b.address
                } else {
                    a.address
                }
            }
        }
    }

    /// Counts a request to `address` in flight until the returned guard is
    /// dropped.
    fn start(&self, address: SocketAddr) -> ActiveRequest {
        let counter = self.counter(address);
        counter.fetch_add(1, Ordering::Relaxed);
        ActiveRequest { counter, address }
    }
}

/// Balancer state for all clusters, by name.
#[derive(Debug, Default)]
pub struct Balancers {
    clusters: Mutex<HashMap<String, Arc<ClusterLb>>>,
    /// Retry, overflow and ejection counters.
    pub stats: stats::ClusterStats,
}

impl Balancers {
    /// The state of one cluster, created on first use.
    pub fn cluster(&self, name: &str) -> Arc<ClusterLb> {
        let mut map = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by `&str` first: the key is copied only the first time.
        if let Some(lb) = map.get(name) {
            return lb.clone();
        }
        map.entry(name.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, health: Health, weight: u32) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([10, 0, 0, 1], port)),
            health,
            weight,
            priority: 0,
            locality: String::new(),
            locality_weight: None,
        }
    }

    fn la(eps: Vec<Endpoint>) -> LoadAssignment {
        LoadAssignment {
            cluster_name: "c".into(),
            endpoints: eps,
        }
    }

    #[test]
    fn round_robin_honours_weights_and_skips_unhealthy() {
        let a = la(vec![
            ep(1, Health::Healthy, 2),
            ep(2, Health::Unhealthy, 5),
            ep(3, Health::Healthy, 1),
            ep(4, Health::Draining, 1),
        ]);
        let lb = ClusterLb::default();
        let picks: Vec<u16> = (0..6)
            .map(|_| lb.pick(LbPolicy::RoundRobin, &a).unwrap().address.port())
            .collect();
        assert_eq!(picks, [1, 1, 3, 1, 1, 3]);
    }

    #[test]
    fn no_healthy_endpoint_means_none_and_degraded_is_a_fallback() {
        let lb = ClusterLb::default();
        assert!(
            lb.pick(LbPolicy::Random, &la(vec![ep(1, Health::Unhealthy, 1)]))
                .is_none()
        );
        let a = la(vec![
            ep(1, Health::Unhealthy, 1),
            ep(2, Health::Degraded, 1),
        ]);
        assert_eq!(lb.pick(LbPolicy::Random, &a).unwrap().address.port(), 2);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let a = la(vec![ep(1, Health::Healthy, 1), ep(2, Health::Healthy, 1)]);
        let lb = ClusterLb::default();
        // Keep ten requests open on port 1.
        let held: Vec<_> = (0..10)
            .map(|_| {
                let c = lb.counter(SocketAddr::from(([10, 0, 0, 1], 1)));
                c.fetch_add(1, Ordering::Relaxed);
                ActiveRequest {
                    counter: c,
                    address: SocketAddr::from(([10, 0, 0, 1], 1)),
                }
            })
            .collect();
        let to_idle = (0..200)
            .filter(|_| lb.pick(LbPolicy::LeastRequest, &a).unwrap().address.port() == 2)
            .count();
        // P2C picks the idle host unless both choices land on the busy one (~25%).
        assert!(to_idle > 120, "{to_idle}");
        drop(held);
        assert_eq!(lb.in_flight(SocketAddr::from(([10, 0, 0, 1], 1))), 0);
    }

    #[test]
    fn circuit_breaker_admits_up_to_the_threshold_and_frees_slots_on_drop() {
        let lb = ClusterLb::default();
        let a = lb.admit(Some(2)).unwrap();
        let _b = lb.admit(Some(2)).unwrap();
        assert!(lb.admit(Some(2)).is_none());
        drop(a);
        assert!(lb.admit(Some(2)).is_some());
        assert!(lb.admit(None).is_some());
    }

    #[test]
    fn retry_budget_scales_with_active_requests_above_its_floor() {
        let lb = ClusterLb::default();
        let cb = CircuitBreaker {
            retry_budget: Some(crate::config::RetryBudget {
                budget_percent: 20.0,
                min_retry_concurrency: 3,
            }),
            ..Default::default()
        };
        // 20 requests in flight: 20% is 4 retries, above the floor of 3.
        let _reqs: Vec<_> = (0..20).map(|_| lb.admit(None).unwrap()).collect();
        let retries: Vec<_> = (0..4).map(|_| lb.admit_retry(Some(&cb)).unwrap()).collect();
        assert!(lb.admit_retry(Some(&cb)).is_none());
        drop(retries);
        drop(_reqs);
        // Nothing in flight: the floor still allows 3.
        let floor: Vec<_> = (0..3).map(|_| lb.admit_retry(Some(&cb)).unwrap()).collect();
        assert!(lb.admit_retry(Some(&cb)).is_none());
        drop(floor);
        // No budget: max_retries, Envoy's default 3.
        let plain: Vec<_> = (0..3).map(|_| lb.admit_retry(None).unwrap()).collect();
        assert!(lb.admit_retry(None).is_none());
        drop(plain);
    }

    #[tokio::test(start_paused = true)]
    async fn the_all_healthy_shortcut_rotates_by_weight_and_yields_to_an_ejection() {
        // Every endpoint healthy in one priority: picked without building
        // endpoint lists; an ejection takes the general path at once, and
        // its end brings the shortcut back.
        let a = la(vec![ep(1, Health::Healthy, 2), ep(2, Health::Healthy, 1)]);
        let lb = ClusterLb::default();
        let ports = |n: usize| -> Vec<u16> {
            (0..n)
                .map(|_| lb.pick(LbPolicy::RoundRobin, &a).unwrap().address.port())
                .collect()
        };
        assert_eq!(ports(6), [1, 1, 2, 1, 1, 2]);
        let od = crate::config::OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(100),
            ..Default::default()
        };
        let second = SocketAddr::from(([10, 0, 0, 1], 2));
        lb.outliers
            .report(&od, 2, second, crate::outlier::TryResult::ServerError);
        assert!(lb.outliers.any_ejected());
        assert_eq!(ports(4), [1, 1, 1, 1]);
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        assert!(!lb.outliers.any_ejected());
        assert!(ports(6).contains(&2));
    }

    #[tokio::test(start_paused = true)]
    async fn ejecting_the_local_priority_fails_over_to_the_next() {
        let mut near = ep(1, Health::Healthy, 1);
        near.priority = 0;
        let mut far = ep(2, Health::Healthy, 1);
        far.priority = 1;
        let a = la(vec![near.clone(), far.clone()]);
        let lb = ClusterLb::default();
        assert_eq!(
            lb.pick(LbPolicy::RoundRobin, &a).unwrap().address,
            near.address
        );
        let od = crate::config::OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(100),
            ..Default::default()
        };
        lb.outliers
            .report(&od, 2, near.address, crate::outlier::TryResult::ServerError);
        // 1 of 2 usable is not below the 50% panic threshold: fail over.
        for _ in 0..4 {
            assert_eq!(
                lb.pick(LbPolicy::RoundRobin, &a).unwrap().address,
                far.address
            );
        }
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        assert_eq!(
            lb.pick(LbPolicy::RoundRobin, &a).unwrap().address,
            near.address
        );
    }

    #[test]
    fn random_spreads_by_weight() {
        let a = la(vec![ep(1, Health::Healthy, 9), ep(2, Health::Healthy, 1)]);
        let lb = ClusterLb::default();
        let ones = (0..1000)
            .filter(|_| lb.pick(LbPolicy::Random, &a).unwrap().address.port() == 1)
            .count();
        assert!((800..980).contains(&ones), "{ones}");
    }

    fn at(port: u16, priority: u32, locality: &str, weight: Option<u32>) -> Endpoint {
        Endpoint {
            priority,
            locality: locality.into(),
            locality_weight: weight,
            ..ep(port, Health::Healthy, 1)
        }
    }

    fn share(lb: &ClusterLb, opts: PickOptions, a: &LoadAssignment, port: u16, n: usize) -> usize {
        (0..n)
            .filter(|_| lb.pick_with(opts, a).unwrap().address.port() == port)
            .count()
    }

    fn opts(policy: LbPolicy, locality_weighted: bool) -> PickOptions {
        PickOptions {
            policy,
            panic_threshold: 50.0,
            hash: None,
            table_size: None,
            locality_weighted,
        }
    }

    #[test]
    fn locality_weighted_cluster_splits_traffic_by_locality_weight() {
        // Two endpoints in z1 (weight 80), one in z2 (weight 20): by
        // endpoint the split would be 2:1, by locality it is 80:20.
        let a = la(vec![
            at(1, 0, "r/z1/", Some(80)),
            at(2, 0, "r/z1/", Some(80)),
            at(3, 0, "r/z2/", Some(20)),
        ]);
        let lb = ClusterLb::default();
        let z2 = share(&lb, opts(LbPolicy::RoundRobin, true), &a, 3, 4000);
        assert!((600..1000).contains(&z2), "{z2} of 4000 to z2, want ~800");
        // The same assignment without locality weighting: by endpoint.
        let z2 = share(&lb, opts(LbPolicy::RoundRobin, false), &a, 3, 3000);
        assert!((900..1100).contains(&z2), "{z2} of 3000 to z2, want 1000");
    }

    #[test]
    fn locality_weights_shrink_with_the_locality_s_health() {
        let a = la(vec![
            at(1, 0, "r/z1/", Some(50)),
            at(2, 0, "r/z1/", Some(50)),
            at(3, 0, "r/z2/", Some(50)),
        ]);
        let lb = ClusterLb::default();
        let od = crate::config::OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(100),
            ..Default::default()
        };
        let one = SocketAddr::from(([10, 0, 0, 1], 1));
        lb.outliers
            .report(&od, 3, one, crate::outlier::TryResult::ServerError);
        // z1 keeps 1 of 2: weight 50 × 0.7 = 35 against z2's 50.
        let z2 = share(&lb, opts(LbPolicy::RoundRobin, true), &a, 3, 4000);
        let want = 4000.0 * 50.0 / 85.0;
        assert!((z2 as f64 - want).abs() < 200.0, "{z2} vs {want}");
    }

    #[test]
    fn unhealthy_priority_zero_sends_everything_to_priority_one() {
        let mut near = at(1, 0, "r/z1/", None);
        near.health = Health::Unhealthy;
        let a = la(vec![near, at(2, 1, "r/z2/", None)]);
        let lb = ClusterLb::default();
        assert_eq!(
            share(&lb, opts(LbPolicy::RoundRobin, false), &a, 2, 100),
            100
        );
    }

    #[test]
    fn a_half_ejected_priority_spills_thirty_percent_to_the_next() {
        let a = la(vec![
            at(1, 0, "r/z1/", None),
            at(2, 0, "r/z1/", None),
            at(3, 1, "r/z2/", None),
        ]);
        let lb = ClusterLb::default();
        assert_eq!(share(&lb, opts(LbPolicy::Random, false), &a, 3, 200), 0);
        let od = crate::config::OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(100),
            ..Default::default()
        };
        lb.outliers.report(
            &od,
            3,
            SocketAddr::from(([10, 0, 0, 1], 1)),
            crate::outlier::TryResult::ServerError,
        );
        // 1 of 2 usable: priority 0 keeps 1.4 × 50% = 70%.
        let spilled = share(&lb, opts(LbPolicy::Random, false), &a, 3, 4000);
        assert!((1000..1400).contains(&spilled), "{spilled} of 4000");
        // A hash key keeps its priority.
        let hashed = PickOptions {
            hash: Some(123_456_789),
            ..opts(LbPolicy::RingHash, false)
        };
        let first = lb.pick_with(hashed, &a).unwrap().address;
        for _ in 0..20 {
            assert_eq!(lb.pick_with(hashed, &a).unwrap().address, first);
        }
    }
}
