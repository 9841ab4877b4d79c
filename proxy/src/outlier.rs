//! Passive outlier detection (Envoy's consecutive-5xx and
//! consecutive-gateway-error ejection): an endpoint that keeps failing is
//! left out of load balancing for `base_ejection_time × times ejected`.

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
        let room = hosts_in_cluster > 0 && ejected_now * 100 / hosts_in_cluster < max_pct;
        if (by_5xx || by_gateway) && room {
            h.times_ejected += 1;
            let base = od.base_ejection_time.unwrap_or(DEFAULT_BASE_EJECTION);
            h.ejected_until = Some(now + base * h.times_ejected);
            h.consecutive_5xx = 0;
            h.consecutive_gateway = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            base_ejection_time: Some(Duration::from_secs(10)),
            max_ejection_percent: Some(50),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_eject_for_base_time_then_the_host_returns() {
        let o = Outliers::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(!o.report(&od(), 2, a, TryResult::ServerError));
        assert!(!o.report(&od(), 2, a, TryResult::Success));
        assert!(!o.report(&od(), 2, a, TryResult::ServerError));
        assert!(!o.report(&od(), 2, a, TryResult::GatewayError));
        assert!(o.report(&od(), 2, a, TryResult::ServerError));
        assert!(o.is_ejected(a));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!o.is_ejected(a));
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_keeps_hosts_in() {
        let o = Outliers::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
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
