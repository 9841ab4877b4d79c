//! The admin `/config_dump` in Envoy's format (`envoy.admin.v3.ConfigDump`):
//! the bootstrap the proxy runs with ([`bootstrap`]), the xDS resources it
//! last ACCEPTED, exactly as received, plus a `SecretsConfigDump` of its
//! certificate chain (`default`) and trust bundle (`ROOTCA`). Never the
//! private key. Envoy's query parameters (`resource`, `mask`, `name_regex`,
//! `include_eds`) are in [`query`].
//!
//! The xDS layer records each accepted resource here ([`record`], one call
//! in `xds::resources::apply`), next to its converted form in the same
//! immutable [`ProxyConfig`] snapshot, so the dump always matches what the
//! data path serves.

pub mod bootstrap;
pub mod query;
mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mesh_proto::envoy::pb::envoy::admin::v3::{
    ClustersConfigDump, ConfigDump, EndpointsConfigDump, ListenersConfigDump, RoutesConfigDump,
    SecretsConfigDump, clusters_config_dump::DynamicCluster,
    endpoints_config_dump::DynamicEndpointConfig, listeners_config_dump::DynamicListener,
    listeners_config_dump::DynamicListenerState, routes_config_dump::DynamicRouteConfig,
    secrets_config_dump::DynamicSecret,
};
use mesh_proto::envoy::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mesh_proto::envoy::pb::google::protobuf::{Any, Timestamp};
use prost::{Message, Name};

use crate::config::ProxyConfig;
use crate::tls::Svid;
use crate::xds::ResourceType;

pub use bootstrap::BootstrapDump;
pub use query::{DumpError, DumpQuery};

/// One accepted resource as received.
#[derive(Debug)]
pub struct Accepted {
    /// The resource, packed as it came.
    pub any: Any,
    /// When it was accepted.
    pub at: SystemTime,
}

/// Accepted resources by type URL, then name. Entries of resources since
/// removed are dropped on the next [`record`] of their type and never shown:
/// the dump lists only names the config still holds.
#[derive(Debug, Clone, Default)]
pub struct RawResources(BTreeMap<String, BTreeMap<String, Arc<Accepted>>>);

/// Records the accepted resources of one response into `config` (which
/// already holds their names and versions), and forgets those of `type_url`
/// the config no longer has.
pub fn record(config: &mut ProxyConfig, type_url: &str, accepted: Vec<(String, Any)>) {
    let at = SystemTime::now();
    let live = config.versions.get(type_url);
    let by_name = config.raw.0.entry(type_url.to_string()).or_default();
    by_name.retain(|name, _| live.is_some_and(|l| l.contains_key(name)));
    for (name, any) in accepted {
        by_name.insert(name, Arc::new(Accepted { any, at }));
    }
}

pub(crate) fn timestamp(t: SystemTime) -> Option<Timestamp> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        seconds: i64::try_from(d.as_secs()).ok()?,
        nanos: i32::try_from(d.subsec_nanos()).ok()?,
    })
}

pub(crate) fn pack<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// (name, version, accepted) of the live resources of a type whose names
/// `query` wants.
fn live(
    config: &ProxyConfig,
    ty: ResourceType,
    query: &DumpQuery,
) -> Vec<(String, String, Arc<Accepted>)> {
    let url = ty.type_url();
    let Some(versions) = config.versions.get(&url) else {
        return Vec::new();
    };
    let raw = config.raw.0.get(&url);
    versions
        .iter()
        .filter(|(name, _)| query.wants(name))
        .filter_map(|(name, version)| {
            let a = raw?.get(name)?;
            Some((name.clone(), version.clone(), a.clone()))
        })
        .collect()
}

fn pem(label: &str, ders: &[&[u8]]) -> Vec<u8> {
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out.into_bytes()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

/// The `default` (certificate chain, no key) and `ROOTCA` secrets of an
/// SVID, as Envoy's SDS would hold them.
pub fn secrets(svid: Option<&Svid>) -> SecretsConfigDump {
    secrets_named(svid, &DumpQuery::default())
}

/// [`secrets`], only those whose names `query` wants.
fn secrets_named(svid: Option<&Svid>, query: &DumpQuery) -> SecretsConfigDump {
    let Some(svid) = svid else {
        return SecretsConfigDump::default();
    };
    let version = svid
        .chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
        .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
        .unwrap_or_default();
    let chain: Vec<&[u8]> = svid.chain.iter().map(|c| c.as_ref()).collect();
    let roots: Vec<&[u8]> = svid.roots.iter().map(|c| c.as_ref()).collect();
    let default = Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pem("CERTIFICATE", &chain)),
            // The private key stays in memory; a dump never carries it.
            private_key: None,
            ..Default::default()
        })),
    };
    let rootca = Secret {
        name: "ROOTCA".into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem("CERTIFICATE", &roots)),
                ..Default::default()
            },
        )),
    };
    SecretsConfigDump {
        dynamic_active_secrets: [default, rootca]
            .into_iter()
            .filter(|s| query.wants(&s.name))
            .map(|s| DynamicSecret {
                name: s.name.clone(),
                version_info: version.clone(),
                secret: Some(pack(&s)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The Envoy `ConfigDump` of `bootstrap`, `config` and `svid`, in Envoy's
/// order (bootstrap, clusters, endpoints, listeners, routes, secrets):
/// endpoints only with `include_eds`, resources only those `name_regex`
/// matches (the bootstrap always).
pub fn build(
    config: &ProxyConfig,
    svid: Option<&Svid>,
    bootstrap: Option<&BootstrapDump>,
    query: &DumpQuery,
) -> ConfigDump {
    let type_version = |ty: ResourceType| {
        config
            .type_versions
            .get(&ty.type_url())
            .cloned()
            .unwrap_or_default()
    };
    let clusters = ClustersConfigDump {
        version_info: type_version(ResourceType::Cluster),
        dynamic_active_clusters: live(config, ResourceType::Cluster, query)
            .into_iter()
            .map(|(_, version, a)| DynamicCluster {
                version_info: version,
                cluster: Some(a.any.clone()),
                last_updated: timestamp(a.at),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let endpoints = EndpointsConfigDump {
        dynamic_endpoint_configs: live(config, ResourceType::Endpoint, query)
            .into_iter()
            .map(|(_, version, a)| DynamicEndpointConfig {
                version_info: version,
                endpoint_config: Some(a.any.clone()),
                last_updated: timestamp(a.at),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let listeners = ListenersConfigDump {
        version_info: type_version(ResourceType::Listener),
        dynamic_listeners: live(config, ResourceType::Listener, query)
            .into_iter()
            .map(|(name, version, a)| DynamicListener {
                name,
                active_state: Some(DynamicListenerState {
                    version_info: version,
                    listener: Some(a.any.clone()),
                    last_updated: timestamp(a.at),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let routes = RoutesConfigDump {
        dynamic_route_configs: live(config, ResourceType::Route, query)
            .into_iter()
            .map(|(_, version, a)| DynamicRouteConfig {
                version_info: version,
                route_config: Some(a.any.clone()),
                last_updated: timestamp(a.at),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut configs = Vec::with_capacity(6);
    if let Some(b) = bootstrap {
        configs.push(pack(&b.config_dump()));
    }
    configs.push(pack(&clusters));
    if query.include_eds {
        configs.push(pack(&endpoints));
    }
    configs.push(pack(&listeners));
    configs.push(pack(&routes));
    configs.push(pack(&secrets_named(svid, query)));
    ConfigDump { configs }
}

/// The answer to `/config_dump?<query>` as pretty JSON text.
pub fn render(
    config: &ProxyConfig,
    svid: Option<&Svid>,
    bootstrap: Option<&BootstrapDump>,
    query: &DumpQuery,
) -> Result<String, DumpError> {
    let dump = build(config, svid, bootstrap, query);
    let json =
        mesh_proto::envoy_json::to_json(&dump).map_err(|e| DumpError::Encode(error_chain(&e)))?;
    let json = query::select(json, query)?;
    serde_json::to_string_pretty(&json).map_err(|e| DumpError::Encode(e.to_string()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
