//! Locality-aware load balancing as Istio emits it (its
//! `ApplyLocalityLBSetting`): EDS priorities by distance from the connecting
//! proxy (failover) or locality weights (`distribute`). Both depend on the
//! proxy's own locality, so a load assignment differs between proxies in
//! different localities.

use mesh_model::networking::{
    LoadBalancerSettings, LocalityDistribute, LocalityFailover, LocalityLbSetting,
};
use mesh_proto::envoy::pb::envoy::config::core::v3::Locality;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
use mesh_proto::envoy::pb::google::protobuf::UInt32Value;

/// What a cluster's `localityLbSetting` (and outlier detection) asks of its
/// load assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalityMode {
    /// Priorities by distance from the proxy: 0 same region/zone/sub-zone,
    /// 1 same zone, 2 same region, 3 elsewhere; with a `failover` entry
    /// for the proxy's region, 3 is the named target region and 4 the rest.
    Failover(Vec<LocalityFailover>),
    /// Locality weights from the first entry whose `from` matches the
    /// proxy; localities it does not name get no traffic.
    Distribute(Vec<LocalityDistribute>),
}

impl LocalityMode {
    /// The mode of a cluster, as Istio decides it with the mesh default
    /// (locality load balancing enabled): off when `enabled: false`;
    /// `distribute` when given; otherwise failover, but only with outlier
    /// detection (without it Envoy would never leave priority 0, so Istio
    /// does not set priorities).
    pub fn of(lb: Option<&LoadBalancerSettings>, outlier_detection: bool) -> Option<Self> {
        let setting = lb.and_then(|l| l.locality_lb_setting.as_ref());
        let Some(LocalityLbSetting {
            distribute,
            failover,
            enabled,
            ..
        }) = setting
        else {
            return outlier_detection.then(|| LocalityMode::Failover(Vec::new()));
        };
        if *enabled == Some(false) {
            return None;
        }
        if !distribute.is_empty() {
            return Some(LocalityMode::Distribute(distribute.clone()));
        }
        outlier_detection.then(|| LocalityMode::Failover(failover.clone()))
    }

    /// Whether the cluster must carry `locality_weighted_lb_config`.
    pub fn weighted(&self) -> bool {
        matches!(self, LocalityMode::Distribute(_))
    }
}

/// Parses `region/zone/sub_zone` (missing parts empty).
pub fn parse(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    Locality {
        region: parts.next().unwrap_or_default().into(),
        zone: parts.next().unwrap_or_default().into(),
        sub_zone: parts.next().unwrap_or_default().into(),
    }
}

/// Applies `mode` for a proxy in `proxy` to the locality groups of one load
/// assignment. Groups left without traffic (`distribute` names no weight
/// for them) are removed.
pub fn apply(mode: &LocalityMode, proxy: &Locality, groups: &mut Vec<LocalityLbEndpoints>) {
    match mode {
        LocalityMode::Failover(failover) => apply_failover(proxy, failover, groups),
        LocalityMode::Distribute(distribute) => apply_distribute(proxy, distribute, groups),
    }
}

/// Istio's `LbPriority`: how far an endpoint's locality is from the proxy's.
fn distance(proxy: &Locality, ep: Option<&Locality>) -> u32 {
    let empty = Locality::default();
    let ep = ep.unwrap_or(&empty);
    match (
        proxy.region == ep.region,
        proxy.zone == ep.zone,
        proxy.sub_zone == ep.sub_zone,
    ) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, _) => 2,
        (false, _, _) => 3,
    }
}

fn apply_failover(
    proxy: &Locality,
    failover: &[LocalityFailover],
    groups: &mut [LocalityLbEndpoints],
) {
    let target = failover
        .iter()
        .find(|f| f.from == proxy.region)
        .map(|f| f.to.as_str());
    for g in groups.iter_mut() {
        let mut p = distance(proxy, g.locality.as_ref());
        if p == 3
            && let Some(to) = target
            && g.locality.as_ref().is_none_or(|l| l.region != to)
        {
            p = 4;
        }
        g.priority = p;
    }
    // Envoy wants consecutive priorities: compact the levels in use.
    let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
    used.sort_unstable();
    used.dedup();
    for g in groups.iter_mut() {
        g.priority = used.iter().position(|p| *p == g.priority).unwrap_or(0) as u32;
    }
}

/// Istio's `LocalityMatch`: a rule locality (`region/zone/sub_zone`, `*`
/// for any part, missing trailing parts match anything) against an actual
/// one.
pub fn matches(rule: &str, actual: Option<&Locality>) -> bool {
    let empty = Locality::default();
    let actual = actual.unwrap_or(&empty);
    let r = parse(rule);
    let region = r.region == "*" || r.region == actual.region;
    let zone = r.zone == "*" || r.zone.is_empty() || r.zone == actual.zone;
    let sub_zone = r.sub_zone == "*" || r.sub_zone.is_empty() || r.sub_zone == actual.sub_zone;
    region && zone && sub_zone
}

/// The weight of a group before `distribute`: the sum of its endpoints'
/// weights (what Istio puts in `LocalityLbEndpoints.load_balancing_weight`).
fn group_weight(g: &LocalityLbEndpoints) -> u32 {
    g.lb_endpoints
        .iter()
        .map(|e| e.load_balancing_weight.map_or(1, |w| w.value))
        .fold(0u32, u32::saturating_add)
}

/// Gives every group its endpoints' total weight as locality weight: what
/// a locality-weighted cluster needs when no `distribute` entry applies
/// (a real Envoy sends nothing to a locality without a weight).
pub fn weigh_by_endpoints(groups: &mut [LocalityLbEndpoints]) {
    for g in groups.iter_mut() {
        g.load_balancing_weight = Some(UInt32Value {
            value: group_weight(g).max(1),
        });
    }
}

fn apply_distribute(
    proxy: &Locality,
    distribute: &[LocalityDistribute],
    groups: &mut Vec<LocalityLbEndpoints>,
) {
    weigh_by_endpoints(groups);
    let Some(rule) = distribute.iter().find(|d| matches(&d.from, Some(proxy))) else {
        // No rule for this proxy: every locality by its endpoints' weight.
        return;
    };
    let mut weights: Vec<Option<u32>> = vec![None; groups.len()];
    for (to, share) in &rule.to {
        // A wildcard `to` may name several localities: they split its
        // share in proportion to their own weights.
        let hit: Vec<usize> = (0..groups.len())
            .filter(|&i| weights[i].is_none() && matches(to, groups[i].locality.as_ref()))
            .collect();
        let total: u64 = hit
            .iter()
            .map(|&i| u64::from(group_weight(&groups[i])))
            .sum();
        for i in hit {
            let own = u64::from(group_weight(&groups[i]));
            let w = (own * u64::from(*share)).div_ceil(total.max(1));
            weights[i] = Some(w.min(u64::from(u32::MAX)) as u32);
        }
    }
    let mut i = 0;
    groups.retain_mut(|g| {
        let w = weights[i].unwrap_or(0);
        i += 1;
        g.load_balancing_weight = Some(UInt32Value { value: w });
        w > 0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::pb::envoy::config::endpoint::v3::LbEndpoint;
    use std::collections::BTreeMap;

    fn group(loc: &str, endpoints: usize) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: (!loc.is_empty()).then(|| parse(loc)),
            lb_endpoints: vec![LbEndpoint::default(); endpoints],
            ..Default::default()
        }
    }

    fn priorities(groups: &[LocalityLbEndpoints]) -> Vec<u32> {
        groups.iter().map(|g| g.priority).collect()
    }

    #[test]
    fn failover_orders_localities_by_distance_from_the_proxy() {
        let mut groups = vec![
            group("r1/z1/s1", 1),
            group("r1/z1/s2", 1),
            group("r1/z2/s1", 1),
            group("r2/z1/s1", 1),
            group("", 1),
        ];
        apply(
            &LocalityMode::Failover(vec![]),
            &parse("r1/z1/s1"),
            &mut groups,
        );
        assert_eq!(priorities(&groups), [0, 1, 2, 3, 3]);
    }

    #[test]
    fn failover_priorities_are_compacted_without_gaps() {
        let mut groups = vec![group("r1/z1/", 1), group("r1/z2/", 1), group("r2/z1/", 1)];
        apply(
            &LocalityMode::Failover(vec![]),
            &parse("r1/z1/"),
            &mut groups,
        );
        // Levels 0, 2, 3 in use become 0, 1, 2.
        assert_eq!(priorities(&groups), [0, 1, 2]);
        let mut far = vec![group("r2/z1/", 1), group("r3/z1/", 1)];
        apply(&LocalityMode::Failover(vec![]), &parse("r1/z1/"), &mut far);
        assert_eq!(priorities(&far), [0, 0], "both level 3");
    }

    #[test]
    fn failover_target_region_comes_before_other_regions() {
        let mut groups = vec![
            group("eu/z1/", 1),
            group("us/z1/", 1),
            group("ap/z1/", 1),
            group("", 1),
        ];
        let failover = vec![
            LocalityFailover {
                from: "us".into(),
                to: "eu".into(),
            },
            LocalityFailover {
                from: "eu".into(),
                to: "ap".into(),
            },
        ];
        apply(
            &LocalityMode::Failover(failover.clone()),
            &parse("us/z1/"),
            &mut groups,
        );
        // us first, then the named target eu, then the rest (level 4).
        assert_eq!(priorities(&groups), [1, 0, 2, 2]);
        // A rule for another region changes nothing for this proxy.
        let mut groups = vec![group("eu/z1/", 1), group("ap/z1/", 1), group("us/z2/", 1)];
        apply(
            &LocalityMode::Failover(failover),
            &parse("ap/z2/"),
            &mut groups,
        );
        assert_eq!(priorities(&groups), [1, 0, 1]);
    }

    #[test]
    fn locality_rules_match_with_wildcards_and_missing_parts() {
        let l = parse("r1/z1/s1");
        for rule in ["r1/z1/s1", "r1/z1/*", "r1/*", "r1", "*", "r1/*/s1"] {
            assert!(matches(rule, Some(&l)), "{rule}");
        }
        for rule in ["r2", "r1/z2/*", "r1/z1/s2", "r2/*"] {
            assert!(!matches(rule, Some(&l)), "{rule}");
        }
        assert!(!matches("r1/*", None));
    }

    fn distribute(from: &str, to: &[(&str, u32)]) -> LocalityDistribute {
        LocalityDistribute {
            from: from.into(),
            to: to
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn weights(groups: &[LocalityLbEndpoints]) -> Vec<(String, u32)> {
        groups
            .iter()
            .map(|g| {
                let l = g.locality.clone().unwrap_or_default();
                (
                    format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
                    g.load_balancing_weight.unwrap().value,
                )
            })
            .collect()
    }

    #[test]
    fn distribute_weights_localities_of_the_matching_rule_and_drops_the_rest() {
        let mode = LocalityMode::Distribute(vec![
            distribute("r2/*", &[("r2/z1/*", 100)]),
            distribute("r1/z1/*", &[("r1/z1/*", 80), ("r1/z2/*", 20)]),
        ]);
        let mut groups = vec![group("r1/z1/", 1), group("r1/z2/", 3), group("r3/z1/", 1)];
        apply(&mode, &parse("r1/z1/a"), &mut groups);
        assert_eq!(
            weights(&groups),
            [("r1/z1/".to_string(), 80), ("r1/z2/".to_string(), 20)]
        );
        assert!(groups.iter().all(|g| g.priority == 0));
    }

    #[test]
    fn distribute_splits_a_wildcard_share_by_endpoint_weight() {
        let mode =
            LocalityMode::Distribute(vec![distribute("r1/*", &[("r1/*", 60), ("r2/z1/*", 40)])]);
        let mut groups = vec![group("r1/z1/", 1), group("r1/z2/", 2), group("r2/z1/", 1)];
        apply(&mode, &parse("r1/z9/"), &mut groups);
        // 60 split 1:2 between r1's zones.
        assert_eq!(
            weights(&groups),
            [
                ("r1/z1/".to_string(), 20),
                ("r1/z2/".to_string(), 40),
                ("r2/z1/".to_string(), 40)
            ]
        );
    }

    #[test]
    fn distribute_without_a_matching_rule_weights_localities_by_their_endpoints() {
        let mode = LocalityMode::Distribute(vec![distribute("r2/*", &[("r2/*", 100)])]);
        let mut groups = vec![group("r1/z1/", 2), group("r2/z1/", 1)];
        apply(&mode, &parse("r1/z1/"), &mut groups);
        assert_eq!(
            weights(&groups),
            [("r1/z1/".to_string(), 2), ("r2/z1/".to_string(), 1)]
        );
    }

    #[test]
    fn mode_needs_outlier_detection_for_failover_but_not_for_distribute() {
        let lb = |json: &str| -> LoadBalancerSettings { serde_json::from_str(json).unwrap() };
        assert_eq!(LocalityMode::of(None, false), None);
        assert_eq!(
            LocalityMode::of(None, true),
            Some(LocalityMode::Failover(vec![]))
        );
        let off = lb(r#"{"localityLbSetting": {"enabled": false}}"#);
        assert_eq!(LocalityMode::of(Some(&off), true), None);
        let fo = lb(r#"{"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}}"#);
        assert_eq!(LocalityMode::of(Some(&fo), false), None);
        assert!(matches!(
            LocalityMode::of(Some(&fo), true),
            Some(LocalityMode::Failover(f)) if f.len() == 1
        ));
        let d =
            lb(r#"{"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"a/*": 100}}]}}"#);
        let mode = LocalityMode::of(Some(&d), false).unwrap();
        assert!(mode.weighted());
    }
}
