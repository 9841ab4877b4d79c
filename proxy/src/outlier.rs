//! Passive outlier detection (Envoy's consecutive-5xx and
//! consecutive-gateway-error ejection): an endpoint that keeps failing is
//! left out of load balancing for `base_ejection_time × times ejected`
//! (capped by `max_ejection_time`), and returns at the first `interval`
//! sweep after that. Each sweep interval a returned host spends without
//! being ejected again takes one off its ejection count, as Envoy does.
//! Sweeps are computed lazily from the ejection time, with no timer task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::OutlierDetection;

/// Envoy's defaults.
const DEFAULT_CONSECUTIVE: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// How one try went, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryResult {
    /// A response below 500.
    Success,
    /// A 5xx response other than a gateway error.
    ServerError,
    /// 502, 503, 504, or a connect failure / reset (local-origin errors
    /// count as gateway errors, Envoy's default without split errors).
    GatewayError,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
}

/// Outlier state of one cluster's endpoints.
#[derive(Debug, Default)]
pub struct Outliers {
    hosts: Mutex<HashMap<SocketAddr, HostState>>,
}

impl Outliers {
    /// Whether `addr` is currently ejected.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .get(&addr)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| until > Instant::now())
    }

    /// Whether any endpoint is ejected right now (one lock for the whole
    /// cluster; no state at all, the usual case, answers at once).
    pub fn any_ejected(&self) -> bool {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.is_empty() {
            return false;
        }
        let now = Instant::now();
        hosts
            .values()
            .any(|h| h.ejected_until.is_some_and(|until| until > now))
    }

    /// The endpoints ejected right now.
    pub fn ejected(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_some_and(|u| u > now))
            .map(|(a, _)| *a)
            .collect()
    }

    /// How many times `addr` counts as ejected (the multiplier of its next
    /// ejection time).
    pub fn times_ejected(&self, addr: SocketAddr) -> u32 {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.get(&addr).map_or(0, |h| h.times_ejected)
    }

    /// Records a try and ejects the endpoint when a streak reaches its
    /// threshold, unless `max_ejection_percent` of the `hosts` endpoints are
    /// already out. Returns true when this call ejected it.
    pub fn report(
        &self,
        od: &OutlierDetection,
        hosts_in_cluster: usize,
        addr: SocketAddr,
        result: TryResult,
    ) -> bool {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let ejected_now = hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|u| u > now))
            .count();
        let h = hosts.entry(addr).or_default();
        match result {
            TryResult::Success => {
                h.consecutive_5xx = 0;
                h.consecutive_gateway = 0;
                return false;
            }
            TryResult::ServerError => {
                h.consecutive_5xx += 1;
                h.consecutive_gateway = 0;
            }
            TryResult::GatewayError => {
                h.consecutive_5xx += 1;
                h.consecutive_gateway += 1;
            }
        }
        if h.ejected_until.is_some_and(|u| u > now) {
            return false;
        }
        let enforced = |pct: Option<u32>| rand::random_range(0..100) < pct.unwrap_or(100);
        let by_5xx = h.consecutive_5xx >= od.consecutive_5xx.unwrap_or(DEFAULT_CONSECUTIVE)
            && enforced(od.enforcing_consecutive_5xx);
        // Envoy enforces gateway-error ejection at 0% unless told otherwise.
        let by_gateway = od
            .consecutive_gateway_failure
            .is_some_and(|n| h.consecutive_gateway >= n)
            && enforced(Some(od.enforcing_consecutive_gateway_failure.unwrap_or(0)));
        let max_pct = od
            .max_ejection_percent
            .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT) as usize;
        // Envoy ejects while the ejected share, this host included, stays
        // within the maximum: `(ejected + 1) × 100 / hosts <= max`.
        let room = hosts_in_cluster > 0 && (ejected_now + 1) * 100 <= max_pct * hosts_in_cluster;
        if !((by_5xx || by_gateway) && room) {
            return false;
        }
        let interval = od
            .interval
            .filter(|i| !i.is_zero())
            .unwrap_or(DEFAULT_INTERVAL);
        // Sweeps since the host came back, each one without an ejection:
        // one off the multiplier per sweep.
        if let Some(back) = h.ejected_until {
            let quiet = now.saturating_duration_since(back).as_nanos() / interval.as_nanos();
            let quiet = u32::try_from(quiet).unwrap_or(u32::MAX);
            h.times_ejected = h.times_ejected.saturating_sub(quiet);
        }
        h.times_ejected += 1;
        let base = od.base_ejection_time.unwrap_or(DEFAULT_BASE_EJECTION);
        let max = od
            .max_ejection_time
            .unwrap_or(DEFAULT_MAX_EJECTION_TIME)
            .max(base);
        let ejection = base.saturating_mul(h.times_ejected).min(max);
        // The host returns at the first sweep after its ejection time.
        let sweeps = ejection.as_nanos().div_ceil(interval.as_nanos());
        let back = interval.saturating_mul(u32::try_from(sweeps).unwrap_or(u32::MAX));
        h.ejected_until = Some(now + back);
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            base_ejection_time: Some(Duration::from_secs(10)),
            interval: Some(Duration::from_secs(1)),
            max_ejection_percent: Some(50),
            ..Default::default()
        }
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_eject_for_base_time_then_the_host_returns() {
        let o = Outliers::default();
        let a = addr(1);
        assert!(!o.report(&od(), 2, a, TryResult::ServerError));
        assert!(!o.report(&od(), 2, a, TryResult::Success));
        assert!(!o.report(&od(), 2, a, TryResult::ServerError));
        assert!(!o.report(&od(), 2, a, TryResult::GatewayError));
        assert!(o.report(&od(), 2, a, TryResult::ServerError));
        assert!(o.is_ejected(a));
        assert_eq!(o.ejected(), vec![a]);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!o.is_ejected(a));
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_gateway_errors_eject_when_enforced() {
        let od = OutlierDetection {
            consecutive_5xx: Some(100),
            consecutive_gateway_failure: Some(2),
            enforcing_consecutive_gateway_failure: Some(100),
            ..od()
        };
        let o = Outliers::default();
        assert!(!o.report(&od, 2, addr(1), TryResult::GatewayError));
        assert!(o.report(&od, 2, addr(1), TryResult::GatewayError));
        // A plain 500 breaks a gateway streak.
        o.report(&od, 2, addr(2), TryResult::GatewayError);
        o.report(&od, 2, addr(2), TryResult::ServerError);
        assert!(!o.report(&od, 2, addr(2), TryResult::GatewayError));
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_last_longer_and_quiet_sweeps_shorten_them_again() {
        let o = Outliers::default();
        let a = addr(1);
        let eject = |o: &Outliers| {
            for _ in 0..3 {
                o.report(&od(), 2, a, TryResult::ServerError);
            }
        };
        eject(&o);
        tokio::time::advance(Duration::from_millis(10_001)).await;
        assert!(!o.is_ejected(a));
        // Ejected again right away: 2 × base.
        eject(&o);
        assert_eq!(o.times_ejected(a), 2);
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(o.is_ejected(a), "second ejection lasts 20 s");
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(!o.is_ejected(a));
        // Five quiet sweeps (1 s each) bring the multiplier back down.
        tokio::time::advance(Duration::from_secs(5)).await;
        eject(&o);
        assert_eq!(o.times_ejected(a), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_returns_at_the_first_sweep_after_its_ejection_time() {
        let od = OutlierDetection {
            base_ejection_time: Some(Duration::from_millis(2_500)),
            interval: Some(Duration::from_secs(2)),
            ..od()
        };
        let o = Outliers::default();
        for _ in 0..3 {
            o.report(&od, 2, addr(1), TryResult::ServerError);
        }
        tokio::time::advance(Duration::from_millis(3_900)).await;
        assert!(o.is_ejected(addr(1)), "2.5 s rounds up to the 4 s sweep");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!o.is_ejected(addr(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_keeps_hosts_in() {
        let o = Outliers::default();
        let (a, b) = (addr(1), addr(2));
        for _ in 0..3 {
            o.report(&od(), 2, a, TryResult::ServerError);
        }
        assert!(o.is_ejected(a));
        // 1 of 2 out is already 50%: b stays in.
        for _ in 0..3 {
            o.report(&od(), 2, b, TryResult::ServerError);
        }
        assert!(!o.is_ejected(b));
    }
}
