//! The install's values: one tree per profile, shaped exactly like the Helm
//! chart's `values.yaml` (deploy/helm/mesh), overridden key by key with
//! `--set a.b=value`.
//!
//! The tree is a `serde_json::Value` rather than a struct so that the same
//! dotted keys work for `meshctl manifest generate --set` and for Helm, and so
//! that an unknown key is caught by looking it up, not by a serde default.

use serde_json::{Map, Value, json};

/// An install profile: a named set of default values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// The control plane alone: one meshd replica, no webhooks (inject with
    /// `meshctl inject`), no disruption budget.
    Minimal,
    /// Production defaults: two meshd replicas with a disruption budget,
    /// injection and validation webhooks that fail closed, STRICT mTLS.
    Default,
    /// For demos and kind: one small replica, webhooks that fail open,
    /// PERMISSIVE mTLS, access logs on.
    Demo,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: [Profile; 3] = [Profile::Minimal, Profile::Default, Profile::Demo];

    /// The profile's name on the command line and in `values-<name>.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Default => "default",
            Profile::Demo => "demo",
        }
    }
}

/// A `--set` that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    /// The argument has no `=`.
    #[error("--set {0:?}: expected key=value (e.g. meshd.replicas=2)")]
    NoEquals(String),
    /// The key names no value of the install (a typo, or a section).
    #[error("--set {key}: unknown key; known keys: {known}")]
    UnknownKey {
        /// The dotted key as given.
        key: String,
        /// Every settable key, comma-separated.
        known: String,
    },
    /// The value does not have the type of the key's default.
    #[error("--set {key}={value}: expected {expected}")]
    WrongType {
        /// The dotted key as given.
        key: String,
        /// The value as given.
        value: String,
        /// What the key takes (`an integer`, `true or false`).
        expected: &'static str,
    },
}

/// The install's values (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Values(Value);

impl Values {
    /// The defaults of `profile`.
    pub fn for_profile(profile: Profile) -> Values {
        let (replicas, requests, limit_memory) = match profile {
            Profile::Minimal => (1, ("100m", "128Mi"), "512Mi"),
            Profile::Default => (2, ("500m", "512Mi"), "2Gi"),
            Profile::Demo => (1, ("50m", "64Mi"), "256Mi"),
        };
        let demo = profile == Profile::Demo;
        Values(json!({
            "global": {
                "hub": "mesh",
                "tag": env!("CARGO_PKG_VERSION"),
                "imagePullPolicy": "IfNotPresent",
                "createNamespace": true,
            },
            "meshd": {
                "replicas": replicas,
                "logLevel": "info",
                "resources": {
                    "requests": { "cpu": requests.0, "memory": requests.1 },
                    "limits": { "memory": limit_memory },
                },
            },
            "meshConfig": {
                "trustDomain": "cluster.local",
                "mtlsMode": if demo { "PERMISSIVE" } else { "STRICT" },
                "outboundTrafficPolicy": "ALLOW_ANY",
                "accessLogEnabled": demo,
            },
            "webhooks": {
                "enabled": profile != Profile::Minimal,
                "failurePolicy": if demo { "Ignore" } else { "Fail" },
            },
            "pdb": {
                "enabled": profile == Profile::Default,
                "minAvailable": 1,
            },
        }))
    }

    /// The whole tree (what Helm's `.Values` holds).
    pub fn tree(&self) -> &Value {
        &self.0
    }

    /// The value at a dotted key; `Value::Null` when absent (the renderer
    /// only asks for keys every profile has).
    pub fn get(&self, key: &str) -> &Value {
        key.split('.').fold(&self.0, |v, k| &v[k])
    }

    /// The string at a dotted key (numbers and booleans as text).
    pub fn str(&self, key: &str) -> String {
        match self.get(key) {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The boolean at a dotted key (false when absent).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).as_bool().unwrap_or(false)
    }

    /// Applies one `key=value`; the value takes the type of the key's
    /// default (integer, boolean or string).
    pub fn set(&mut self, arg: &str) -> Result<(), SetError> {
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| SetError::NoEquals(arg.to_string()))?;
        let known = self.keys();
        let slot = key
            .split('.')
            .try_fold(&mut self.0, |v, k| v.as_object_mut()?.get_mut(k))
            .filter(|v| !v.is_object())
            .ok_or_else(|| SetError::UnknownKey {
                key: key.to_string(),
                known: known.join(", "),
            })?;
        let wrong = |expected| SetError::WrongType {
            key: key.to_string(),
            value: raw.to_string(),
            expected,
        };
        *slot = match slot {
            Value::Bool(_) => Value::Bool(raw.parse().map_err(|_| wrong("true or false"))?),
            Value::Number(_) => Value::from(raw.parse::<u64>().map_err(|_| wrong("an integer"))?),
            _ => Value::String(raw.to_string()),
        };
        Ok(())
    }

    /// Every settable dotted key, sorted.
    pub fn keys(&self) -> Vec<String> {
        fn walk(prefix: &str, node: &Map<String, Value>, out: &mut Vec<String>) {
            for (k, v) in node {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v.as_object() {
                    Some(child) => walk(&key, child, out),
                    None => out.push(key),
                }
            }
        }
        let mut out = Vec::new();
        if let Some(root) = self.0.as_object() {
            walk("", root, &mut out);
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_changes_a_leaf_with_the_defaults_type() {
        let mut v = Values::for_profile(Profile::Default);
        v.set("meshd.replicas=3").unwrap();
        v.set("global.hub=registry.example/mesh").unwrap();
        v.set("webhooks.enabled=false").unwrap();
        assert_eq!(v.get("meshd.replicas"), &json!(3));
        assert_eq!(v.str("global.hub"), "registry.example/mesh");
        assert!(!v.flag("webhooks.enabled"));
    }

    #[test]
    fn set_rejects_unknown_keys_sections_and_bad_types() {
        let mut v = Values::for_profile(Profile::Minimal);
        let err = v.set("meshd.replica=2").unwrap_err();
        assert!(
            err.to_string().contains("meshd.replica: unknown key"),
            "{err}"
        );
        assert!(matches!(v.set("meshd=2"), Err(SetError::UnknownKey { .. })));
        assert!(matches!(
            v.set("meshd.replicas=two"),
            Err(SetError::WrongType { .. })
        ));
        assert!(matches!(
            v.set("meshd.replicas"),
            Err(SetError::NoEquals(_))
        ));
    }
}
