//! DestinationRule rules.

use std::collections::BTreeSet;

use super::Errs;
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

pub(super) fn validate(e: &mut Errs, spec: &DestinationRuleSpec) {
    e.non_empty_str("spec.host", &spec.host);
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(e, "spec.trafficPolicy", tp);
    }
    e.export_to("spec.exportTo", &spec.export_to);
    let mut seen = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            e.add(format!("{p}.name"), "a subset needs a name");
        } else {
            e.label(&format!("{p}.name"), &subset.name);
            if !seen.insert(subset.name.as_str()) {
                e.add(
                    format!("{p}.name"),
                    format!("duplicate subset name {:?}", subset.name),
                );
            }
        }
        if let Some(tp) = &subset.traffic_policy {
            traffic_policy(e, &format!("{p}.trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(e: &mut Errs, p: &str, tp: &TrafficPolicy) {
    policy_parts(
        e,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        match &pl.port {
            Some(port) => e.port(&format!("{pp}.port.number"), port.number),
            None => e.add(format!("{pp}.port"), "port is required"),
        }
        policy_parts(
            e,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
    if let Some(t) = &tp.tunnel {
        e.non_empty_str(&format!("{p}.tunnel.targetHost"), &t.target_host);
        e.port(&format!("{p}.tunnel.targetPort"), t.target_port);
    }
}

fn policy_parts(
    e: &mut Errs,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(e, &format!("{p}.loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        connection_pool(e, &format!("{p}.connectionPool"), pool);
    }
    if let Some(o) = outlier {
        outlier_detection(e, &format!("{p}.outlierDetection"), o);
    }
    if let Some(tls) = tls {
        client_tls(e, &format!("{p}.tls"), tls);
    }
}

fn load_balancer(e: &mut Errs, p: &str, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        e.add(p, "simple and consistentHash are mutually exclusive");
    }
    if let Some(ch) = &lb.consistent_hash {
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() != 1 {
            e.add(
                format!("{p}.consistentHash"),
                "must set exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            e.add(
                format!("{p}.consistentHash"),
                "ringHash and maglev are mutually exclusive",
            );
        }
        if let Some(m) = &ch.maglev
            && let Some(size) = m.table_size
            && !is_prime(size)
        {
            e.add(
                format!("{p}.consistentHash.maglev.tableSize"),
                format!("{size} must be a prime number (e.g. 65537)"),
            );
        }
        let ring = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size);
        if ring == Some(0) {
            e.add(
                format!("{p}.consistentHash.ringHash.minimumRingSize"),
                "0 must be > 0",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            e.non_empty_str(&format!("{p}.consistentHash.httpCookie.name"), &cookie.name);
            e.opt_duration(
                &format!("{p}.consistentHash.httpCookie.ttl"),
                &cookie.ttl,
                true,
            );
        }
    }
    if let Some(w) = &lb.warmup_duration_secs {
        e.duration(&format!("{p}.warmupDurationSecs"), w, false);
    }
    if let Some(loc) = &lb.locality_lb_setting {
        if !loc.distribute.is_empty() && !loc.failover.is_empty() {
            e.add(
                format!("{p}.localityLbSetting"),
                "distribute and failover are mutually exclusive",
            );
        }
        for (i, d) in loc.distribute.iter().enumerate() {
            let sum: u64 = d.to.values().map(|w| u64::from(*w)).sum();
            if sum != 100 {
                e.add(
                    format!("{p}.localityLbSetting.distribute[{i}].to"),
                    format!("weights sum to {sum}, must be 100"),
                );
            }
        }
    }
}

fn connection_pool(e: &mut Errs, p: &str, pool: &ConnectionPoolSettings) {
    if let Some(tcp) = &pool.tcp {
        e.positive(
            &format!("{p}.tcp.maxConnections"),
            tcp.max_connections.map(i64::from),
        );
        e.opt_duration(
            &format!("{p}.tcp.connectTimeout"),
            &tcp.connect_timeout,
            false,
        );
        e.opt_duration(
            &format!("{p}.tcp.maxConnectionDuration"),
            &tcp.max_connection_duration,
            false,
        );
        e.opt_duration(&format!("{p}.tcp.idleTimeout"), &tcp.idle_timeout, false);
        if let Some(ka) = &tcp.tcp_keepalive {
            if ka.probes == Some(0) {
                e.add(format!("{p}.tcp.tcpKeepalive.probes"), "0 must be > 0");
            }
            e.opt_duration(&format!("{p}.tcp.tcpKeepalive.time"), &ka.time, false);
            e.opt_duration(
                &format!("{p}.tcp.tcpKeepalive.interval"),
                &ka.interval,
                false,
            );
        }
    }
    if let Some(http) = &pool.http {
        for (field, v) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ] {
            e.positive(&format!("{p}.http.{field}"), v.map(i64::from));
        }
        e.opt_duration(&format!("{p}.http.idleTimeout"), &http.idle_timeout, false);
    }
}

/// Whether `n` is prime (Maglev needs a prime table size).
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn outlier_detection(e: &mut Errs, p: &str, o: &OutlierDetection) {
    if let Some(n) = o.consecutive_errors
        && n < 0
    {
        e.add(
            format!("{p}.consecutiveErrors"),
            format!("{n} must be >= 0"),
        );
    }
    for (field, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = v {
            e.percent(&format!("{p}.{field}"), f64::from(v));
        }
    }
    e.opt_duration(&format!("{p}.interval"), &o.interval, false);
    e.opt_duration(
        &format!("{p}.baseEjectionTime"),
        &o.base_ejection_time,
        false,
    );
}

fn client_tls(e: &mut Errs, p: &str, tls: &ClientTlsSettings) {
    if tls.mode == Some(ClientTlsMode::Mutual)
        && tls.credential_name.is_none()
        && (tls.client_certificate.is_none() || tls.private_key.is_none())
    {
        e.add(
            format!("{p}.mode"),
            "MUTUAL mode needs clientCertificate and privateKey, or credentialName",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networking::{
        ConnectionPoolSettings, ConsistentHashLb, LoadBalancerSettings, Maglev, RingHash,
        TcpKeepalive, TcpSettings,
    };

    fn problems(tp: TrafficPolicy) -> Vec<String> {
        let spec = DestinationRuleSpec {
            host: "reviews".into(),
            traffic_policy: Some(tp),
            ..Default::default()
        };
        let mut e = Errs::default();
        validate(&mut e, &spec);
        e.0.iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn maglev_table_size_must_be_prime_and_ring_size_positive() {
        let lb = |maglev: Option<u64>, ring: Option<u64>| TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                consistent_hash: Some(ConsistentHashLb {
                    http_header_name: Some("x-user".into()),
                    maglev: maglev.map(|s| Maglev {
                        table_size: Some(s),
                    }),
                    ring_hash: ring.map(|s| RingHash {
                        minimum_ring_size: Some(s),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(problems(lb(Some(65537), None)).is_empty());
        assert_eq!(
            problems(lb(Some(65536), None)),
            [
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 65536 must be a prime number (e.g. 65537)"
            ]
        );
        assert_eq!(
            problems(lb(None, Some(0))),
            [
                "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize: 0 must be > 0"
            ]
        );
    }

    #[test]
    fn zero_keepalive_probes_and_negative_consecutive_errors_are_refused() {
        let tp = TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    tcp_keepalive: Some(TcpKeepalive {
                        probes: Some(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_errors: Some(-1),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            problems(tp),
            [
                "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes: 0 must be > 0",
                "spec.trafficPolicy.outlierDetection.consecutiveErrors: -1 must be >= 0",
            ]
        );
    }
}
