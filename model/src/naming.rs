//! Istio's naming conventions for xDS resources, so that proxy-config output
//! reads like istioctl's.

use std::fmt;

/// Direction of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic leaving the workload toward a service.
    Outbound,
    /// Traffic arriving at the workload.
    Inbound,
}

impl Direction {
    /// `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// The parts of a cluster name `direction|port|subset|host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The service (outbound) or workload (inbound) port.
    pub port: u32,
    /// The subset, if any.
    pub subset: Option<String>,
    /// The service FQDN (empty for inbound clusters).
    pub host: String,
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}",
            self.direction.as_str(),
            self.port,
            self.subset.as_deref().unwrap_or(""),
            self.host
        )
    }
}

/// `outbound|9080|v1|reviews.default.svc.cluster.local` (subset empty when `None`).
pub fn outbound_cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// `inbound|9080||`.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

/// Splits a cluster name made by [`outbound_cluster_name`] or
/// [`inbound_cluster_name`]; `None` for any other name (e.g. `BlackHoleCluster`).
pub fn parse_cluster_name(name: &str) -> Option<ClusterName> {
    let mut parts = name.splitn(4, '|');
    let direction = match parts.next()? {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => return None,
    };
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some(ClusterName {
        direction,
        port,
        subset: (!subset.is_empty()).then(|| subset.to_string()),
        host: host.to_string(),
    })
}

/// The outbound HTTP route configuration of a port: `9080`.
pub fn route_config_name(port: u32) -> String {
    port.to_string()
}

/// The SNI a client sends for mTLS to a cluster:
/// `outbound_.9080_.v1_.reviews.default.svc.cluster.local`.
pub fn sni_for_cluster(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// The Istio virtual listener capturing outbound traffic.
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
/// The Istio virtual listener capturing inbound traffic.
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
/// The cluster that forwards to the original destination.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// The cluster that drops traffic.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_istio_conventions() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(
            outbound_cluster_name(9080, Some("v1"), host),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster_name(9080, None, host),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(inbound_cluster_name(9080), "inbound|9080||");
        assert_eq!(route_config_name(9080), "9080");
        assert_eq!(
            sni_for_cluster(9080, Some("v1"), host),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        assert_eq!(
            sni_for_cluster(9080, None, host),
            "outbound_.9080_._.reviews.default.svc.cluster.local"
        );
    }

    #[test]
    fn cluster_names_parse_back() {
        let name = outbound_cluster_name(9080, Some("v1"), "reviews.default.svc.cluster.local");
        let parsed = parse_cluster_name(&name).unwrap();
        assert_eq!(parsed.direction, Direction::Outbound);
        assert_eq!(parsed.port, 9080);
        assert_eq!(parsed.subset.as_deref(), Some("v1"));
        assert_eq!(parsed.to_string(), name);
        let inbound = parse_cluster_name("inbound|15006||").unwrap();
        assert_eq!(
            (inbound.direction, inbound.subset, inbound.host.as_str()),
            (Direction::Inbound, None, "")
        );
        assert_eq!(parse_cluster_name("BlackHoleCluster"), None);
        assert_eq!(parse_cluster_name("outbound|x||h"), None);
    }
}
