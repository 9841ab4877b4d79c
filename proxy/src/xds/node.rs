//! The proxy's xDS `Node`: identity and metadata under Istio's keys (see
//! docs/xds.md).

use std::collections::BTreeMap;

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::google::protobuf as wkt;

/// Who this proxy is, from flags or environment.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    /// Explicit node id; derived Istio-style when empty.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Workload name.
    pub workload_name: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Instance IPs (the first one goes into the node id).
    pub instance_ips: Vec<String>,
    /// Cluster id (`Kubernetes` or a mesh-local name).
    pub cluster_id: String,
    /// Locality `region/zone/subzone` (empty: none).
    pub locality: String,
    /// Service name (`node.cluster`).
    pub service_name: String,
    /// Service ports, `protocol:port` comma separated.
    pub service_ports: String,
    /// `REDIRECT`, `TPROXY` or `NONE`.
    pub interception_mode: String,
    /// Explicit mode: the loopback HTTP proxy port (`MESH_OUTBOUND_PORT`).
    pub outbound_port: Option<u16>,
    /// Explicit mode: the port the sidecar accepts (m)TLS on for the
    /// workload (`MESH_INBOUND_PORT`).
    pub inbound_port: Option<u16>,
    /// Explicit mode: the app's port on 127.0.0.1 (`MESH_APP_PORT`).
    pub app_port: Option<u16>,
}

fn s(v: &str) -> wkt::Value {
    wkt::Value {
        kind: Some(wkt::value::Kind::StringValue(v.to_owned())),
    }
}

impl NodeIdentity {
    /// Istio's node id: `sidecar~<ip>~<workload>.<ns>~<ns>.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        let ip = self
            .instance_ips
            .first()
            .map_or("127.0.0.1", String::as_str);
        let ns = &self.namespace;
        format!(
            "sidecar~{ip}~{}.{ns}~{ns}.svc.cluster.local",
            self.workload_name
        )
    }

    /// `node.locality` from `region/zone/subzone` (`None` when empty).
    fn locality(&self) -> Option<xc::Locality> {
        if self.locality.is_empty() {
            return None;
        }
        let mut parts = self.locality.splitn(3, '/');
        let mut next = || parts.next().unwrap_or_default().to_owned();
        Some(xc::Locality {
            region: next(),
            zone: next(),
            sub_zone: next(),
        })
    }

    /// The `Node` sent on the first request of every stream.
    pub fn to_node(&self) -> xc::Node {
        let mut fields = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                fields.insert(k.to_owned(), s(v));
            }
        };
        put("NAMESPACE", &self.namespace);
        put("SERVICE_ACCOUNT", &self.service_account);
        put("WORKLOAD_NAME", &self.workload_name);
        put("INSTANCE_IPS", &self.instance_ips.join(","));
        put("CLUSTER_ID", &self.cluster_id);
        put("MESH_SERVICE_NAME", &self.service_name);
        put("MESH_SERVICE_PORTS", &self.service_ports);
        put(
            "INTERCEPTION_MODE",
            if self.interception_mode.is_empty() {
                "REDIRECT"
            } else {
                &self.interception_mode
            },
        );
        for (key, port) in [
            ("MESH_OUTBOUND_PORT", self.outbound_port),
            ("MESH_INBOUND_PORT", self.inbound_port),
            ("MESH_APP_PORT", self.app_port),
        ] {
            if let Some(port) = port {
                fields.insert(key.to_owned(), s(&port.to_string()));
            }
        }
        let labels = wkt::Struct {
            fields: self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
        };
        fields.insert(
            "LABELS".to_owned(),
            wkt::Value {
                kind: Some(wkt::value::Kind::StructValue(labels)),
            },
        );
        xc::Node {
            id: self.node_id(),
            cluster: self.service_name.clone(),
            metadata: Some(wkt::Struct {
                fields: fields.into_iter().collect(),
            }),
            locality: self.locality(),
            user_agent_name: "mesh-proxy".to_owned(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_and_metadata_use_istio_conventions() {
        let id = NodeIdentity {
            namespace: "default".into(),
            workload_name: "reviews-v1".into(),
            instance_ips: vec!["10.1.0.5".into()],
            service_name: "reviews".into(),
            service_ports: "http:9080".into(),
            labels: [("app".to_owned(), "reviews".to_owned())].into(),
            ..Default::default()
        };
        let node = id.to_node();
        assert_eq!(
            node.id,
            "sidecar~10.1.0.5~reviews-v1.default~default.svc.cluster.local"
        );
        assert_eq!(node.cluster, "reviews");
        let md = node.metadata.unwrap().fields;
        assert_eq!(md["MESH_SERVICE_PORTS"], s("http:9080"));
        assert_eq!(md["INTERCEPTION_MODE"], s("REDIRECT"));
        assert!(
            matches!(&md["LABELS"].kind, Some(wkt::value::Kind::StructValue(l)) if l.fields["app"] == s("reviews"))
        );
        assert!(!md.contains_key("MESH_OUTBOUND_PORT"));
        assert!(node.locality.is_none());
    }

    #[test]
    fn locality_flag_becomes_node_locality() {
        let id = NodeIdentity {
            locality: "us-east1/us-east1-b/rack7".into(),
            ..Default::default()
        };
        let loc = id.to_node().locality.unwrap();
        assert_eq!(loc.region, "us-east1");
        assert_eq!(loc.zone, "us-east1-b");
        assert_eq!(loc.sub_zone, "rack7");
        let region_only = NodeIdentity {
            locality: "eu".into(),
            ..Default::default()
        };
        let loc = region_only.to_node().locality.unwrap();
        assert_eq!((loc.region.as_str(), loc.zone.as_str()), ("eu", ""));
    }

    #[test]
    fn explicit_mode_ports_go_into_the_metadata() {
        let id = NodeIdentity {
            interception_mode: "NONE".into(),
            outbound_port: Some(18080),
            inbound_port: Some(18006),
            app_port: Some(18001),
            ..Default::default()
        };
        let md = id.to_node().metadata.unwrap().fields;
        assert_eq!(md["INTERCEPTION_MODE"], s("NONE"));
        assert_eq!(md["MESH_OUTBOUND_PORT"], s("18080"));
        assert_eq!(md["MESH_INBOUND_PORT"], s("18006"));
        assert_eq!(md["MESH_APP_PORT"], s("18001"));
    }
}
