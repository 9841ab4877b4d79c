//! Stable virtual IPs for services, from the reserved range 240.240.0.0/16
//! (class E, never routed on the Internet). A host's first choice is derived
//! from a hash of its name; collisions probe forward. Assignments are
//! persisted in SQLite so a VIP never changes across restarts.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use sqlx::{Row, SqlitePool};

use crate::store::StoreError;

/// The first address of the range (240.240.0.0).
pub const RANGE_BASE: u32 = 0xF0F0_0000;
/// Addresses in the range (a /16; .0 and .255.255 are never handed out).
pub const RANGE_SIZE: u32 = 1 << 16;

/// Allocates and remembers VIPs.
#[derive(Debug, Default)]
pub struct VipAllocator {
    pool: Option<SqlitePool>,
    by_host: BTreeMap<String, Ipv4Addr>,
    used: HashSet<Ipv4Addr>,
}

impl VipAllocator {
    /// An allocator that persists in `pool` (loads existing assignments);
    /// `None` keeps them in memory only (tests, benchmarks).
    pub async fn load(pool: Option<SqlitePool>) -> Result<Self, StoreError> {
        let mut this = Self {
            pool,
            ..Default::default()
        };
        if let Some(pool) = &this.pool {
            for row in sqlx::query("SELECT host, vip FROM vips")
                .fetch_all(pool)
                .await?
            {
                let host: String = row.try_get("host")?;
                let vip: String = row.try_get("vip")?;
                if let Ok(ip) = vip.parse() {
                    this.used.insert(ip);
                    this.by_host.insert(host, ip);
                }
            }
        }
        Ok(this)
    }

    /// The VIP of every host, allocating (and persisting) missing ones.
    pub async fn ensure(
        &mut self,
        hosts: &[String],
    ) -> Result<BTreeMap<String, Ipv4Addr>, StoreError> {
        let mut fresh = Vec::new();
        for host in hosts {
            if !self.by_host.contains_key(host) {
                let ip = self.pick(host)?;
                self.used.insert(ip);
                self.by_host.insert(host.clone(), ip);
                fresh.push((host.clone(), ip));
            }
        }
        if let (Some(pool), false) = (&self.pool, fresh.is_empty()) {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for (host, ip) in &fresh {
                sqlx::query("INSERT OR REPLACE INTO vips (host, vip) VALUES (?, ?)")
                    .bind(host)
                    .bind(ip.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(hosts
            .iter()
            .filter_map(|h| self.by_host.get(h).map(|ip| (h.clone(), *ip)))
            .collect())
    }

    fn pick(&self, host: &str) -> Result<Ipv4Addr, StoreError> {
        let start = fnv1a(host) % (RANGE_SIZE - 2) + 1;
        for i in 0..RANGE_SIZE - 2 {
            let offset = (start - 1 + i) % (RANGE_SIZE - 2) + 1;
            let ip = Ipv4Addr::from(RANGE_BASE + offset);
            if !self.used.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(StoreError::Invalid(vec![format!(
            "VIP range 240.240.0.0/16 is exhausted; cannot give {host} an address"
        )]))
    }
}

/// FNV-1a: a stable hash (std's hasher is randomised per process).
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn vips_are_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["a.default.svc.cluster.local".to_string(), "b".to_string()];
        let first = {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let mut a = VipAllocator::load(Some(store.pool().clone()))
                .await
                .unwrap();
            a.ensure(&hosts).await.unwrap()
        };
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut a = VipAllocator::load(Some(store.pool().clone()))
            .await
            .unwrap();
        // Allocating in another order must not move existing VIPs.
        let again = a
            .ensure(&["c".to_string(), hosts[1].clone(), hosts[0].clone()])
            .await
            .unwrap();
        assert_eq!(first[&hosts[0]], again[&hosts[0]]);
        assert_eq!(first[&hosts[1]], again[&hosts[1]]);
        assert!(first[&hosts[0]].octets().starts_with(&[240, 240]));
    }

    #[tokio::test]
    async fn colliding_hosts_get_distinct_vips() {
        let mut a = VipAllocator::load(None).await.unwrap();
        let hosts: Vec<String> = (0..5000)
            .map(|i| format!("svc-{i}.ns.svc.cluster.local"))
            .collect();
        let m = a.ensure(&hosts).await.unwrap();
        let distinct: HashSet<_> = m.values().collect();
        assert_eq!(distinct.len(), hosts.len());
    }
}
