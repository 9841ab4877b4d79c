//! Priority and locality selection as Envoy does it: a priority's share of
//! the traffic follows its health scaled by the overprovisioning factor
//! (a priority with at least 1/1.4 ≈ 71% usable endpoints keeps everything;
//! below that the rest spills to the next priority), and in a
//! locality-weighted cluster a locality of the chosen priority is picked by
//! its weight scaled the same way by its own health.

use std::collections::BTreeMap;

use rand::Rng;

use crate::config::Endpoint;

/// Envoy's default overprovisioning factor (140%).
pub const OVERPROVISIONING_FACTOR: f64 = 1.4;

/// One priority's health: usable endpoints (healthy, not ejected) out of
/// all its endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityHealth {
    /// The priority (0 is the best).
    pub priority: u32,
    /// Endpoints that can take traffic.
    pub usable: usize,
    /// All endpoints of the priority, whatever their health.
    pub total: usize,
}

impl PriorityHealth {
    /// `min(1, factor × usable / total)`: the share this level can take.
    fn availability(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (OVERPROVISIONING_FACTOR * self.usable as f64 / self.total as f64).min(1.0)
    }
}

/// Each priority's share of the traffic (summing to 1 unless nothing is
/// usable), best priority first: a priority takes what its availability
/// allows of what the better ones left; when the total availability is
/// below 1 the shares are normalised (Envoy's "normalized total health").
pub fn priority_loads(levels: &[PriorityHealth]) -> Vec<(u32, f64)> {
    let mut sorted = levels.to_vec();
    sorted.sort_by_key(|l| l.priority);
    let total: f64 = sorted.iter().map(PriorityHealth::availability).sum();
    let scale = if total > 0.0 && total < 1.0 {
        1.0 / total
    } else {
        1.0
    };
    let mut left = 1.0f64;
    sorted
        .iter()
        .map(|l| {
            let take = (l.availability() * scale).min(left);
            left -= take;
            (l.priority, take)
        })
        .collect()
}

/// The priority whose share holds `draw` (in `[0, 1)`: random, or from
/// the request's hash key so a key keeps its priority, as Envoy does for
/// hashing balancers); `None` when no priority has any load.
pub fn choose_priority(loads: &[(u32, f64)], draw: f64) -> Option<u32> {
    let usable: Vec<&(u32, f64)> = loads.iter().filter(|(_, l)| *l > 0.0).collect();
    let sum: f64 = usable.iter().map(|(_, l)| l).sum();
    let mut x = draw * sum;
    for (p, l) in &usable {
        if x < *l {
            return Some(*p);
        }
        x -= l;
    }
    usable.last().map(|(p, _)| *p)
}

/// A draw in `[0, 1)` from a hash key.
pub fn draw_of(hash: u64) -> f64 {
    (hash % 1_000_000) as f64 / 1_000_000.0
}

/// The endpoints of one locality of a locality-weighted cluster, picked
/// by weight: `usable` are the candidates of the chosen priority and `all`
/// every endpoint of that priority (the denominator of each locality's
/// health). A locality's effective weight is its `locality_weight` ×
/// `min(1, 1.4 × usable / all)`; localities without a weight or a usable
/// endpoint get nothing. `None` when no locality has a positive weight.
pub fn choose_locality<'a>(
    usable: &[&'a Endpoint],
    all: &[&Endpoint],
    rng: &mut impl Rng,
) -> Option<Vec<&'a Endpoint>> {
    let mut groups: BTreeMap<&str, (Vec<&'a Endpoint>, usize, u32)> = BTreeMap::new();
    for e in all {
        let g = groups.entry(e.locality.as_str()).or_default();
        g.1 += 1;
        g.2 = e.locality_weight.unwrap_or(0);
    }
    for e in usable {
        groups.entry(e.locality.as_str()).or_default().0.push(e);
    }
    let weighted: Vec<(Vec<&'a Endpoint>, f64)> = groups
        .into_values()
        .filter(|(hosts, total, _)| !hosts.is_empty() && *total > 0)
        .map(|(hosts, total, weight)| {
            let ratio = (OVERPROVISIONING_FACTOR * hosts.len() as f64 / total as f64).min(1.0);
            (hosts, f64::from(weight) * ratio)
        })
        .filter(|(_, w)| *w > 0.0)
        .collect();
    let sum: f64 = weighted.iter().map(|(_, w)| w).sum();
    if sum <= 0.0 {
        return None;
    }
    let mut x = rng.random_range(0.0..sum);
    let last = weighted.len() - 1;
    for (i, (hosts, w)) in weighted.into_iter().enumerate() {
        if x < w || i == last {
            return Some(hosts);
        }
        x -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Health;
    use std::net::SocketAddr;

    fn level(priority: u32, usable: usize, total: usize) -> PriorityHealth {
        PriorityHealth {
            priority,
            usable,
            total,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_healthy_enough_priority_keeps_all_the_traffic() {
        // 3 of 4 usable: 1.4 × 75% ≥ 100%.
        let loads = priority_loads(&[level(0, 3, 4), level(1, 2, 2)]);
        assert!(
            close(loads[0].1, 1.0) && close(loads[1].1, 0.0),
            "{loads:?}"
        );
    }

    #[test]
    fn a_degraded_priority_spills_its_shortfall_to_the_next() {
        // 1 of 2 usable: 1.4 × 50% = 70% stays, 30% spills.
        let loads = priority_loads(&[level(0, 1, 2), level(1, 2, 2)]);
        assert!(
            close(loads[0].1, 0.7) && close(loads[1].1, 0.3),
            "{loads:?}"
        );
        // Every priority-0 endpoint gone: priority 1 takes everything.
        let loads = priority_loads(&[level(0, 0, 2), level(1, 1, 2)]);
        assert!(
            close(loads[0].1, 0.0) && close(loads[1].1, 1.0),
            "{loads:?}"
        );
    }

    #[test]
    fn shares_are_normalised_when_the_whole_cluster_is_short() {
        // 1.4 × 25% = 35% and 1.4 × 25% = 35%: 70% in all, normalised.
        let loads = priority_loads(&[level(0, 1, 4), level(1, 1, 4)]);
        assert!(
            close(loads[0].1, 0.5) && close(loads[1].1, 0.5),
            "{loads:?}"
        );
        assert_eq!(
            choose_priority(&priority_loads(&[level(0, 0, 1)]), 0.5),
            None
        );
        let loads = priority_loads(&[level(0, 1, 2), level(1, 2, 2)]);
        assert_eq!(choose_priority(&loads, 0.69), Some(0));
        assert_eq!(choose_priority(&loads, 0.71), Some(1));
    }

    fn ep(port: u16, locality: &str, weight: Option<u32>) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([10, 0, 0, 1], port)),
            health: Health::Healthy,
            weight: 1,
            priority: 0,
            locality: locality.into(),
            locality_weight: weight,
        }
    }

    #[test]
    fn localities_are_drawn_by_weight_scaled_by_their_health() {
        let a1 = ep(1, "r/a/", Some(50));
        let a2 = ep(2, "r/a/", Some(50));
        let b = ep(3, "r/b/", Some(50));
        let all = [&a1, &a2, &b];
        let mut rng = rand::rng();
        let count_a = |usable: &[&Endpoint], rng: &mut rand::rngs::ThreadRng| {
            (0..2000)
                .filter(|_| choose_locality(usable, &all, rng).unwrap()[0].locality == "r/a/")
                .count()
        };
        let even = count_a(&all, &mut rng);
        assert!((850..1150).contains(&even), "{even}");
        // Half of `a` gone: its weight is 50 × 0.7 = 35 against 50.
        let a = count_a(&[&a1, &b], &mut rng);
        let expected = 2000.0 * 35.0 / 85.0;
        assert!((a as f64 - expected).abs() < 120.0, "{a} vs {expected}");
    }

    #[test]
    fn a_locality_without_weight_or_usable_endpoint_gets_nothing() {
        let a = ep(1, "r/a/", Some(80));
        let b = ep(2, "r/b/", None);
        let c = ep(3, "r/c/", Some(20));
        let mut rng = rand::rng();
        for _ in 0..200 {
            let hosts = choose_locality(&[&a, &b], &[&a, &b, &c], &mut rng).unwrap();
            assert_eq!(hosts[0].locality, "r/a/");
        }
        assert!(choose_locality(&[&b], &[&a, &b], &mut rng).is_none());
    }
}
