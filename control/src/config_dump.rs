//! `/debug/config_dump?proxyID=<name>`: what meshd currently generates for a
//! connected proxy, as the Envoy admin `ConfigDump` (istiod serves the same
//! endpoint). The resources come from the same [`crate::translate::generate`]
//! the xDS server pushes; versions and times come from the proxy's sync
//! status. The bootstrap's node is rebuilt from what meshd read of the
//! proxy's `Node` (docs/xds.md, "Node identity"), not the raw message.

use std::collections::BTreeMap;

use mesh_proto::envoy::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, ConfigDump, EndpointsConfigDump, ListenersConfigDump,
    RoutesConfigDump, clusters_config_dump::DynamicCluster,
    endpoints_config_dump::DynamicEndpointConfig, listeners_config_dump::DynamicListener,
    listeners_config_dump::DynamicListenerState, routes_config_dump::DynamicRouteConfig,
};
use mesh_proto::envoy::pb::envoy::config::bootstrap::v3::Bootstrap;
use mesh_proto::envoy::pb::envoy::config::core::v3::{Locality, Node};
use mesh_proto::envoy::pb::google::protobuf::{Any, Struct, Timestamp, Value, value::Kind};
use prost::{Message, Name};

use crate::node::{Interception, ProxyNode};
use crate::translate::{
    CLUSTER_TYPE, ENDPOINT_TYPE, Generated, LISTENER_TYPE, ROUTE_TYPE, set_version,
};
use crate::xds::status::{ProxyStatus, TypeStatus};

/// Why no dump could be made.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No connected proxy has that name or node id.
    #[error("no connected proxy {asked:?}; connected: {}", list_or_none(.connected))]
    UnknownProxy {
        /// The name asked for.
        asked: String,
        /// Names of the connected proxies.
        connected: Vec<String>,
    },
    /// A resource could not be printed as JSON.
    #[error("printing the config dump")]
    Json(#[from] mesh_proto::envoy_json::JsonError),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Finds a connected proxy by istioctl name (`pod.namespace`) or node id;
/// with several streams of one node, the newest.
pub fn find_proxy(proxies: &[ProxyStatus], asked: &str) -> Result<ProxyStatus, DumpError> {
    proxies
        .iter()
        .filter(|p| p.name == asked || p.node.id == asked)
        .max_by_key(|p| p.connection)
        .cloned()
        .ok_or_else(|| DumpError::UnknownProxy {
            asked: asked.into(),
            connected: proxies.iter().map(|p| p.name.clone()).collect(),
        })
}

fn timestamp(secs: Option<u64>) -> Option<Timestamp> {
    secs.map(|s| Timestamp {
        seconds: i64::try_from(s).unwrap_or(i64::MAX),
        nanos: 0,
    })
}

fn pack<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Per type: (version of the set, when it was last sent).
fn type_info(
    status: &ProxyStatus,
    short: &str,
    resources: &BTreeMap<String, Generated>,
) -> (String, Option<Timestamp>) {
    let t = status
        .types
        .get(short)
        .cloned()
        .unwrap_or_else(TypeStatus::default);
    let version = t.sent_version.unwrap_or_else(|| set_version(resources));
    (version, timestamp(t.sent_at))
}

fn str_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// The node as meshd understood it, in the `Node` form Envoy's bootstrap
/// dump shows (metadata keys of docs/xds.md).
pub fn node_of(p: &ProxyNode) -> Node {
    let mut fields = BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), str_value(&p.namespace));
    fields.insert("SERVICE_ACCOUNT".to_string(), str_value(&p.service_account));
    if !p.workload_name.is_empty() {
        fields.insert("WORKLOAD_NAME".to_string(), str_value(&p.workload_name));
    }
    if !p.labels.is_empty() {
        let labels = p
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), str_value(v)))
            .collect();
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
    }
    if !p.ips.is_empty() {
        fields.insert("INSTANCE_IPS".to_string(), str_value(p.ips.join(",")));
    }
    if let Some(s) = &p.service_name {
        fields.insert("MESH_SERVICE_NAME".to_string(), str_value(s));
    }
    if !p.service_ports.is_empty() {
        let ports: Vec<String> = p
            .service_ports
            .iter()
            .map(|(name, port)| format!("{name}:{port}"))
            .collect();
        fields.insert("MESH_SERVICE_PORTS".to_string(), str_value(ports.join(",")));
    }
    let mode = match p.interception {
        Interception::Redirect => "REDIRECT",
        Interception::Tproxy => "TPROXY",
        Interception::None => "NONE",
    };
    fields.insert("INTERCEPTION_MODE".to_string(), str_value(mode));
    if !p.version.is_empty() {
        fields.insert("ISTIO_VERSION".to_string(), str_value(&p.version));
    }
    let locality = p.locality.as_ref().map(|l| {
        let mut parts = l.splitn(3, '/').map(str::to_string);
        Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            sub_zone: parts.next().unwrap_or_default(),
        }
    });
    Node {
        id: p.id.clone(),
        cluster: p.cluster.clone(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        locality,
        ..Default::default()
    }
}

/// The Envoy `ConfigDump` of `config` generated for `status`'s proxy, in
/// Envoy's order (bootstrap, clusters, endpoints, listeners, routes).
pub fn build(status: &ProxyStatus, config: &crate::translate::ProxyConfig) -> ConfigDump {
    let empty = BTreeMap::new();
    let of = |ty: &str| config.get(ty).unwrap_or(&empty);
    let bootstrap = BootstrapConfigDump {
        bootstrap: Some(Bootstrap {
            node: Some(node_of(&status.node)),
            ..Default::default()
        }),
        last_updated: timestamp(Some(status.connected_at)),
    };
    let clusters = of(CLUSTER_TYPE);
    let (cds_version, cds_time) = type_info(status, "CDS", clusters);
    let clusters = ClustersConfigDump {
        version_info: cds_version,
        dynamic_active_clusters: clusters
            .values()
            .map(|g| DynamicCluster {
                version_info: g.version.clone(),
                cluster: Some(g.any.clone()),
                last_updated: cds_time,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (_, eds_time) = type_info(status, "EDS", of(ENDPOINT_TYPE));
    let endpoints = EndpointsConfigDump {
        dynamic_endpoint_configs: of(ENDPOINT_TYPE)
            .values()
            .map(|g| DynamicEndpointConfig {
                version_info: g.version.clone(),
                endpoint_config: Some(g.any.clone()),
                last_updated: eds_time,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (lds_version, lds_time) = type_info(status, "LDS", of(LISTENER_TYPE));
    let listeners = ListenersConfigDump {
        version_info: lds_version,
        dynamic_listeners: of(LISTENER_TYPE)
            .iter()
            .map(|(name, g)| DynamicListener {
                name: name.clone(),
                active_state: Some(DynamicListenerState {
                    version_info: g.version.clone(),
                    listener: Some(g.any.clone()),
                    last_updated: lds_time,
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (_, rds_time) = type_info(status, "RDS", of(ROUTE_TYPE));
    let routes = RoutesConfigDump {
        dynamic_route_configs: of(ROUTE_TYPE)
            .values()
            .map(|g| DynamicRouteConfig {
                version_info: g.version.clone(),
                route_config: Some(g.any.clone()),
                last_updated: rds_time,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ConfigDump {
        configs: vec![
            pack(&bootstrap),
            pack(&clusters),
            pack(&endpoints),
            pack(&listeners),
            pack(&routes),
        ],
    }
}

/// The JSON dump for proxy `asked` among `proxies`, from `snapshot`.
pub fn dump_json(
    proxies: &[ProxyStatus],
    asked: &str,
    snapshot: &crate::snapshot::Snapshot,
) -> Result<serde_json::Value, DumpError> {
    let status = find_proxy(proxies, asked)?;
    let config = crate::translate::generate(snapshot, &status.node);
    Ok(mesh_proto::envoy_json::to_json(&build(&status, &config))?)
}

/// An error and its sources, `: `-separated, for a response body.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
