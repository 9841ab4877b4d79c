//! Proto3 JSON of Envoy messages, printed the way Envoy's admin prints its
//! config dump: proto field names (`dynamic_active_clusters`, as Envoy's
//! `/config_dump` and `istioctl proxy-config -o json` show them), `@type` on
//! every `Any`, well-known types in their JSON forms (RFC 3339 timestamps,
//! `"5s"` durations, 64-bit integers as strings), default values left out.
//!
//! The prost types of `envoy-types` carry no JSON support, so the message is
//! encoded to bytes and re-read as a `prost_reflect::DynamicMessage` over
//! the descriptors `build.rs` embeds (the admin config dump and the
//! extensions the mesh emits, with their imports). meshd's
//! `/debug/config_dump` and the proxy's admin `/config_dump` both print
//! through it.

use std::sync::OnceLock;

use crate::envoy::pb::google::protobuf::Any;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Why a message could not be printed as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptors did not load (a build problem).
    #[error("loading the embedded Envoy descriptors: {0}")]
    Descriptors(String),
    /// The message's type is not among the embedded descriptors.
    #[error("no descriptor for {0}: add its file to ROOTS in build.rs")]
    UnknownType(String),
    /// The bytes do not decode as the named type.
    #[error("decoding {type_name}")]
    Decode {
        /// The message type.
        type_name: String,
        /// The decode error.
        #[source]
        source: prost::DecodeError,
    },
    /// Serialization failed (e.g. an `Any` of a type without a descriptor).
    #[error("printing {type_name} as JSON")]
    Serialize {
        /// The message type.
        type_name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))
}

/// Envoy's admin output options: proto field names, no defaults.
fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
}

/// The JSON of a message of type `type_name` encoded as `bytes`.
pub fn bytes_to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let desc = pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| JsonError::UnknownType(type_name.into()))?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|source| JsonError::Decode {
        type_name: type_name.into(),
        source,
    })?;
    msg.serialize_with_options(serde_json::value::Serializer, &options())
        .map_err(|source| JsonError::Serialize {
            type_name: type_name.into(),
            source,
        })
}

/// The JSON of a prost message.
pub fn to_json<M: Message + Name>(msg: &M) -> Result<serde_json::Value, JsonError> {
    bytes_to_json(&M::full_name(), &msg.encode_to_vec())
}

/// The JSON of a packed message, with its `@type` first as Envoy prints it.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    let type_name = any
        .type_url
        .rsplit_once('/')
        .map(|(_, n)| n)
        .unwrap_or(&any.type_url);
    let body = bytes_to_json(type_name, &any.value)?;
    let mut out = serde_json::Map::new();
    out.insert("@type".into(), any.type_url.clone().into());
    if let serde_json::Value::Object(fields) = body {
        out.extend(fields);
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::pb::envoy::admin::v3::{ClustersConfigDump, ConfigDump};
    use crate::envoy::pb::envoy::config::cluster::v3::Cluster;
    use crate::envoy::pb::google::protobuf::Duration;

    #[test]
    fn nested_any_prints_with_type_and_proto_field_names() {
        let cluster = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        let dump = ClustersConfigDump {
            version_info: "v1".into(),
            dynamic_active_clusters: vec![
                crate::envoy::pb::envoy::admin::v3::clusters_config_dump::DynamicCluster {
                    version_info: "v1".into(),
                    cluster: Some(Any {
                        type_url: Cluster::type_url(),
                        value: cluster.encode_to_vec(),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let all = ConfigDump {
            configs: vec![Any {
                type_url: ClustersConfigDump::type_url(),
                value: dump.encode_to_vec(),
            }],
        };
        let json = to_json(&all).unwrap();
        let c = &json["configs"][0];
        assert_eq!(
            c["@type"],
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        );
        let cl = &c["dynamic_active_clusters"][0]["cluster"];
        assert_eq!(
            cl["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(cl["connect_timeout"], "10s");
        assert_eq!(
            cl["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
    }
}
