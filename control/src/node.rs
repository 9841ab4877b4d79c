//! A proxy's identity, read from the xDS `Node` it sends (docs/xds.md,
//! "Node identity").

use std::collections::BTreeMap;

use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use mesh_proto::envoy::pb::google::protobuf::{Struct, value::Kind as ValueKind};
use serde::Serialize;

/// How a proxy receives traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Interception {
    /// iptables REDIRECT to 15001/15006 (default).
    Redirect,
    /// TPROXY.
    Tproxy,
    /// Explicit mode: no capture; an HTTP proxy listener on loopback.
    None,
}

/// What meshd knows about a connected proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyNode {
    /// `node.id`.
    pub id: String,
    /// `node.cluster` (istioctl's CLUSTER column).
    pub cluster: String,
    /// `NAMESPACE` (default `default`).
    pub namespace: String,
    /// `SERVICE_ACCOUNT` (default `default`).
    pub service_account: String,
    /// `WORKLOAD_NAME`.
    pub workload_name: String,
    /// `LABELS`.
    pub labels: BTreeMap<String, String>,
    /// `INSTANCE_IPS`, first is the primary.
    pub ips: Vec<String>,
    /// `MESH_SERVICE_NAME`: the service this workload serves, if any.
    pub service_name: Option<String>,
    /// `MESH_SERVICE_PORTS`: `(protocol-or-name, port)`.
    pub service_ports: Vec<(String, u32)>,
    /// `INTERCEPTION_MODE`.
    pub interception: Interception,
    /// `MESH_OUTBOUND_PORT`: the loopback HTTP proxy port in explicit mode.
    pub outbound_port: Option<u32>,
    /// `MESH_INBOUND_PORT`: where an explicit-mode sidecar accepts (m)TLS
    /// for its workload (what callers dial).
    pub inbound_port: Option<u32>,
    /// `MESH_APP_PORT`: where an explicit-mode workload's app listens on
    /// loopback (default: the workload port).
    pub app_port: Option<u32>,
    /// `node.locality` as `region/zone/sub_zone`.
    pub locality: Option<String>,
    /// `ISTIO_VERSION` or the user agent version, for proxy-status.
    pub version: String,
    /// The proxy runs Istio's TCP metadata exchange (ALPN
    /// `istio-peer-exchange`): mesh-proxy does (its user agent name). An
    /// Envoy is not configured with Istio's exchange filter, so it neither
    /// offers nor accepts that ALPN value (Istio's `PILOT_DISABLE_MX_ALPN`
    /// behaviour): a preamble it did not expect would reach its app.
    pub peer_exchange: bool,
}

impl ProxyNode {
    /// Reads a node; fields it lacks take defaults (a bare Envoy still gets
    /// config).
    pub fn from_node(node: &Node) -> Self {
        let meta = node.metadata.as_ref();
        let s = |k: &str| meta.and_then(|m| string_field(m, k));
        let namespace = s("NAMESPACE").unwrap_or_else(|| "default".into());
        let labels = meta
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| match &v.kind {
                Some(ValueKind::StructValue(st)) => Some(
                    st.fields
                        .keys()
                        .filter_map(|k| string_field(st, k).map(|v| (k.clone(), v)))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let ips = s("INSTANCE_IPS")
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let service_ports = s("MESH_SERVICE_PORTS")
            .map(|v| parse_ports(&v))
            .unwrap_or_default();
        let interception = match s("INTERCEPTION_MODE").as_deref() {
            Some("NONE") => Interception::None,
            Some("TPROXY") => Interception::Tproxy,
            _ => Interception::Redirect,
        };
        let locality = node.locality.as_ref().and_then(|l| {
            (!l.region.is_empty()).then(|| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
        });
        let version = s("ISTIO_VERSION")
            .or_else(|| {
                node.user_agent_version_type.as_ref().map(|v| match v {
                    mesh_proto::envoy::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(v) => v.clone(),
                    mesh_proto::envoy::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentBuildVersion(b) => b
                        .version
                        .as_ref()
                        .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
                        .unwrap_or_default(),
                })
            })
            .unwrap_or_default();
        ProxyNode {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            namespace,
            service_account: s("SERVICE_ACCOUNT").unwrap_or_else(|| "default".into()),
            workload_name: s("WORKLOAD_NAME").unwrap_or_default(),
            labels,
            ips,
            service_name: s("MESH_SERVICE_NAME").filter(|n| !n.is_empty()),
            service_ports,
            interception,
            outbound_port: s("MESH_OUTBOUND_PORT").and_then(|p| p.parse().ok()),
            inbound_port: s("MESH_INBOUND_PORT").and_then(|p| p.parse().ok()),
            app_port: s("MESH_APP_PORT").and_then(|p| p.parse().ok()),
            locality,
            version,
            peer_exchange: node.user_agent_name == "mesh-proxy",
        }
    }
}

impl ProxyNode {
    /// In explicit mode with an inbound port: the workload port served
    /// (the first of `MESH_SERVICE_PORTS`), the sidecar's inbound port and
    /// the app's port. `None` for captured proxies and for explicit proxies
    /// that terminate no inbound traffic.
    pub fn explicit_inbound(&self) -> Option<ExplicitInbound> {
        if self.interception != Interception::None {
            return None;
        }
        let inbound_port = self.inbound_port?;
        let (protocol, port) = self.service_ports.first()?.clone();
        Some(ExplicitInbound {
            protocol,
            port,
            inbound_port,
            app_port: self.app_port.unwrap_or(port),
        })
    }

    /// The address this proxy's workload is reached at: the first
    /// `INSTANCE_IPS`, else loopback.
    pub fn primary_ip(&self) -> &str {
        self.ips.first().map_or("127.0.0.1", String::as_str)
    }
}

/// The one inbound port of an explicit-mode workload (docs/xds.md,
/// "Explicit mode").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitInbound {
    /// Protocol or port name of the workload port (`http`, `tcp`...).
    pub protocol: String,
    /// The workload (service) port, e.g. 9080.
    pub port: u32,
    /// The sidecar's inbound listener port.
    pub inbound_port: u32,
    /// The app's port on 127.0.0.1.
    pub app_port: u32,
}

fn string_field(st: &Struct, key: &str) -> Option<String> {
    match st.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(ValueKind::StringValue(s)) => Some(s.clone()),
        Some(ValueKind::NumberValue(n)) => Some(format!("{n}")),
        _ => None,
    }
}

/// Parses `http:9080,tcp:3306` (also `9080` alone, as TCP).
pub fn parse_ports(v: &str) -> Vec<(String, u32)> {
    v.split(',')
        .filter_map(|p| {
            let p = p.trim();
            match p.rsplit_once(':') {
                Some((name, port)) => port.parse().ok().map(|n| (name.to_string(), n)),
                None => p.parse().ok().map(|n| ("tcp".to_string(), n)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::pb::google::protobuf::Value;

    fn sv(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.into())),
        }
    }

    #[test]
    fn node_metadata_becomes_a_proxy_identity() {
        let mut labels = Struct::default();
        labels.fields.insert("version".into(), sv("v1"));
        let mut meta = Struct::default();
        meta.fields.insert("NAMESPACE".into(), sv("shop"));
        meta.fields
            .insert("INSTANCE_IPS".into(), sv("10.0.0.1, 10.0.0.2"));
        meta.fields
            .insert("MESH_SERVICE_NAME".into(), sv("reviews"));
        meta.fields
            .insert("MESH_SERVICE_PORTS".into(), sv("http:9080,tcp:3306"));
        meta.fields.insert("INTERCEPTION_MODE".into(), sv("NONE"));
        meta.fields.insert("MESH_OUTBOUND_PORT".into(), sv("15001"));
        meta.fields.insert("MESH_INBOUND_PORT".into(), sv("18006"));
        meta.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(ValueKind::StructValue(labels)),
            },
        );
        let node = Node {
            id: "sidecar~10.0.0.1~reviews-1.shop~shop.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        let p = ProxyNode::from_node(&node);
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.ips, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            p.service_ports,
            vec![("http".into(), 9080), ("tcp".into(), 3306)]
        );
        assert_eq!(p.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(p.interception, Interception::None);
        assert_eq!(p.outbound_port, Some(15001));
        assert_eq!(p.service_account, "default");
        // Explicit mode serves the first workload port; the app port
        // defaults to it.
        assert_eq!(
            p.explicit_inbound(),
            Some(ExplicitInbound {
                protocol: "http".into(),
                port: 9080,
                inbound_port: 18006,
                app_port: 9080,
            })
        );
        assert_eq!(p.primary_ip(), "10.0.0.1");
    }
}
