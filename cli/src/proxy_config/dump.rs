//! Reading an Envoy admin `ConfigDump` (JSON) as meshd's
//! `/debug/config_dump` and the proxy's admin `/config_dump` print it.
//! Envoy prints proto field names (`dynamic_active_clusters`); protojson's
//! default is lowerCamelCase (`dynamicActiveClusters`): both are accepted.

use serde_json::Value;

/// A config dump.
#[derive(Debug, Clone)]
pub struct Dump(pub Value);

/// `obj[key]`, trying the proto field name then its lowerCamelCase form.
pub fn field<'a>(obj: &'a Value, key: &str) -> &'a Value {
    match obj.get(key) {
        Some(v) => v,
        None => obj.get(camel(key)).unwrap_or(&Value::Null),
    }
}

/// A string field, empty when absent.
pub fn str_field<'a>(obj: &'a Value, key: &str) -> &'a str {
    field(obj, key).as_str().unwrap_or("")
}

/// An array field, empty when absent.
pub fn arr<'a>(obj: &'a Value, key: &str) -> &'a [Value] {
    field(obj, key).as_array().map_or(&[], Vec::as_slice)
}

/// A number field (proto3 JSON prints 64-bit numbers as strings).
pub fn num(obj: &Value, key: &str) -> Option<u64> {
    match field(obj, key) {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl Dump {
    /// The section whose `@type` ends with `.{kind}` (e.g.
    /// `ClustersConfigDump`).
    pub fn section(&self, kind: &str) -> Option<&Value> {
        arr(&self.0, "configs").iter().find(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.rsplit('.').next() == Some(kind))
        })
    }

    fn items(&self, kind: &str, list: &str, inner: &[&str]) -> Vec<Value> {
        let Some(s) = self.section(kind) else {
            return Vec::new();
        };
        arr(s, list)
            .iter()
            .filter_map(|item| {
                let mut v = item;
                for k in inner {
                    v = field(v, k);
                }
                (!v.is_null()).then(|| v.clone())
            })
            .collect()
    }

    /// Active clusters (dynamic, then static).
    pub fn clusters(&self) -> Vec<Value> {
        let mut out = self.items(
            "ClustersConfigDump",
            "dynamic_active_clusters",
            &["cluster"],
        );
        out.extend(self.items("ClustersConfigDump", "static_clusters", &["cluster"]));
        out
    }

    /// Active listeners.
    pub fn listeners(&self) -> Vec<Value> {
        let mut out = self.items(
            "ListenersConfigDump",
            "dynamic_listeners",
            &["active_state", "listener"],
        );
        out.extend(self.items("ListenersConfigDump", "static_listeners", &["listener"]));
        out
    }

    /// Route configurations.
    pub fn routes(&self) -> Vec<Value> {
        let mut out = self.items(
            "RoutesConfigDump",
            "dynamic_route_configs",
            &["route_config"],
        );
        out.extend(self.items(
            "RoutesConfigDump",
            "static_route_configs",
            &["route_config"],
        ));
        out
    }

    /// Cluster load assignments.
    pub fn endpoints(&self) -> Vec<Value> {
        let mut out = self.items(
            "EndpointsConfigDump",
            "dynamic_endpoint_configs",
            &["endpoint_config"],
        );
        out.extend(self.items(
            "EndpointsConfigDump",
            "static_endpoint_configs",
            &["endpoint_config"],
        ));
        out
    }

    /// Active secrets, each `{name, version_info, last_updated, secret}`.
    pub fn secrets(&self) -> Vec<Value> {
        let mut out = self.items("SecretsConfigDump", "dynamic_active_secrets", &[]);
        out.extend(self.items("SecretsConfigDump", "static_secrets", &[]));
        out
    }

    /// Whether the dump has a secrets section at all.
    pub fn has_secrets(&self) -> bool {
        self.section("SecretsConfigDump").is_some()
    }

    /// The bootstrap (with its node).
    pub fn bootstrap(&self) -> Option<Value> {
        self.section("BootstrapConfigDump")
            .map(|s| field(s, "bootstrap").clone())
            .filter(|b| !b.is_null())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_proto_name_or_camel_case() {
        let v = serde_json::json!({"dynamicActiveClusters": [1], "port_value": "80"});
        assert_eq!(arr(&v, "dynamic_active_clusters").len(), 1);
        assert_eq!(num(&v, "port_value"), Some(80));
    }
}
