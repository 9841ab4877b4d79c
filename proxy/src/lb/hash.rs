//! Consistent hashing: Envoy-style ring hash and Maglev tables over a
//! cluster's usable endpoints. A request's hash key maps to the same
//! endpoint on every call while the endpoint set is unchanged, and removing
//! one of N endpoints remaps only about 1/N of the keys.

use std::net::SocketAddr;

/// Envoy's default minimum ring size.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_SIZE: u64 = 65537;
/// Upper bound on ring entries (Envoy's default maximum ring size is 8M;
/// this keeps memory modest).
const MAX_RING_SIZE: u64 = 1 << 20;

/// A stable 64-bit hash (FNV-1a followed by the splitmix64 finaliser, for
/// well-spread output). Stable across processes and releases, unlike std's
/// `DefaultHasher`, so every proxy maps a key the same way.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A lookup table built for one endpoint set.
#[derive(Debug)]
pub enum Table {
    /// Sorted (hash, host index) points on the ring.
    Ring(Vec<(u64, usize)>),
    /// Maglev's lookup table of host indexes.
    Maglev(Vec<usize>),
}

impl Table {
    /// A ring with `min_size` points per unit of weight (so at least
    /// `min_size` in all), fewer only when that would pass 2^20 points.
    /// A host's points do not depend on the other hosts, so adding or
    /// removing one moves only the keys of that host (Envoy scales the
    /// points to the host count, which moves a few more).
    pub fn ring(hosts: &[(SocketAddr, u32)], min_size: u64) -> Table {
        let total: u64 = hosts.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
        let per_weight = min_size.min(MAX_RING_SIZE / total.max(1)).max(1);
        let mut points = Vec::with_capacity((per_weight * total) as usize);
        for (i, (addr, w)) in hosts.iter().enumerate() {
            let share = per_weight * u64::from((*w).max(1));
            for n in 0..share {
                points.push((hash64(format!("{addr}_{n}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Table::Ring(points)
    }

    /// A Maglev table of `size` entries (a prime keeps the permutations
    /// complete), filled by weight as Envoy does.
    pub fn maglev(hosts: &[(SocketAddr, u32)], size: u64) -> Table {
        let m = size.max(hosts.len() as u64).max(2);
        let max_w = hosts
            .iter()
            .map(|(_, w)| u64::from((*w).max(1)))
            .max()
            .unwrap_or(1);
        struct Entry {
            offset: u64,
            skip: u64,
            weight: u64,
            target: u64,
            next: u64,
        }
        let mut entries: Vec<Entry> = hosts
            .iter()
            .map(|(addr, w)| {
                let name = addr.to_string();
                Entry {
                    offset: hash64(name.as_bytes()) % m,
                    skip: hash64(format!("{name}#skip").as_bytes()) % (m - 1) + 1,
                    weight: u64::from((*w).max(1)),
                    target: 0,
                    next: 0,
                }
            })
            .collect();
        let mut table = vec![usize::MAX; m as usize];
        let mut filled = 0u64;
        if entries.is_empty() {
            return Table::Maglev(Vec::new());
        }
        let mut iteration: u64 = 1;
        while filled < m {
            for (i, e) in entries.iter_mut().enumerate() {
                if filled >= m {
                    break;
                }
                // A host of the top weight takes a slot every round, one of
                // a third of it every third round.
                if iteration * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                let mut c = (e.offset + e.skip * e.next) % m;
                while table[c as usize] != usize::MAX {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % m;
                }
                table[c as usize] = i;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Table::Maglev(table)
    }

    /// The host index for `key`, None for an empty table.
    pub fn lookup(&self, key: u64) -> Option<usize> {
        match self {
            Table::Ring(points) => {
                if points.is_empty() {
                    return None;
                }
                let at = points.partition_point(|(h, _)| *h < key);
                Some(points[at % points.len()].1)
            }
            Table::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                Some(table[(key % table.len() as u64) as usize])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u16) -> Vec<(SocketAddr, u32)> {
        (1..=n)
            .map(|i| (SocketAddr::from(([10, 0, 0, i as u8], 9080)), 1))
            .collect()
    }

    fn owners(t: &Table, hosts: &[(SocketAddr, u32)], keys: u64) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| hosts[t.lookup(hash64(&k.to_le_bytes())).unwrap()].0)
            .collect()
    }

    fn check_minimal_disruption(build: impl Fn(&[(SocketAddr, u32)]) -> Table) {
        let all = hosts(5);
        let before = owners(&build(&all), &all, 10_000);
        // Same set, same answers.
        assert_eq!(before, owners(&build(&all), &all, 10_000));
        // Every host gets a fair share (about 2000 each).
        for (h, _) in &all {
            let n = before.iter().filter(|o| *o == h).count();
            assert!((1_000..3_200).contains(&n), "{h}: {n}");
        }
        let gone = all[2].0;
        let fewer: Vec<_> = all.iter().copied().filter(|(a, _)| *a != gone).collect();
        let after = owners(&build(&fewer), &fewer, 10_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned_by_gone = before.iter().filter(|o| **o == gone).count();
        // Keys of the removed host must move; others should mostly stay.
        assert!(moved >= owned_by_gone);
        assert!(
            moved <= owned_by_gone + 10_000 / 20,
            "moved {moved}, the removed host owned {owned_by_gone}"
        );
    }

    #[test]
    fn ring_hash_moves_only_the_removed_hosts_keys() {
        check_minimal_disruption(|h| Table::ring(h, DEFAULT_RING_SIZE));
    }

    #[test]
    fn maglev_moves_about_one_nth_of_the_keys() {
        check_minimal_disruption(|h| Table::maglev(h, DEFAULT_MAGLEV_SIZE));
    }

    #[test]
    fn weights_shift_the_share_of_keys() {
        let mut h = hosts(2);
        h[0].1 = 3;
        for (name, t) in [
            ("ring", Table::ring(&h, DEFAULT_RING_SIZE)),
            ("maglev", Table::maglev(&h, 1009)),
        ] {
            let o = owners(&t, &h, 10_000);
            let first = o.iter().filter(|a| **a == h[0].0).count();
            assert!((6_500..8_500).contains(&first), "{name}: {first}");
        }
    }

    #[test]
    fn empty_tables_answer_none() {
        assert_eq!(Table::ring(&[], 1024).lookup(7), None);
        assert_eq!(Table::maglev(&[], 1009).lookup(7), None);
    }
}
