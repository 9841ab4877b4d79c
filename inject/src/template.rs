//! The containers and volumes injection adds.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::{InjectConfig, annotations};
use crate::probes::HEALTH_PORT;

/// Name of the interception init container.
pub const INIT_NAME: &str = "mesh-init";
/// Name of the proxy container.
pub const PROXY_NAME: &str = "mesh-proxy";
/// Volumes injection adds, in order.
pub const VOLUME_NAMES: [&str; 4] = ["mesh-token", "mesh-root-cert", "mesh-podinfo", "mesh-data"];

/// Ports the proxy itself listens on; never captured as inbound app traffic.
const PROXY_PORTS: &str = "15020,15021,15090";

/// What injection reads off the pod before changing it.
#[derive(Debug)]
pub struct PodFacts {
    workload: String,
    app_ports: Vec<u64>,
    annotations: BTreeMap<String, String>,
}

impl PodFacts {
    /// Reads the app's ports and the traffic annotations.
    pub fn read(meta: &Value, containers: &[Value], workload: &str) -> Result<PodFacts, String> {
        let mut app_ports = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let port = p
                    .get("containerPort")
                    .and_then(Value::as_u64)
                    .filter(|p| (1..=65535).contains(p))
                    .ok_or_else(|| format!("spec.containers[{i}].ports[{j}].containerPort: must be a port number 1-65535"))?;
                if !app_ports.contains(&port) {
                    app_ports.push(port);
                }
            }
        }
        let annotations = meta
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PodFacts {
            workload: workload.to_string(),
            app_ports,
            annotations,
        })
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Inbound ports to capture: the annotation, else the declared container
    /// ports, else all (`*`), as Istio does.
    fn inbound_ports(&self) -> String {
        if let Some(v) = self.annotation(annotations::INCLUDE_INBOUND_PORTS) {
            return v.to_string();
        }
        if self.app_ports.is_empty() {
            return "*".into();
        }
        self.app_ports
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// The init container that writes the interception rules.
pub fn init_container(cfg: &InjectConfig, facts: &PodFacts) -> Value {
    let uid = cfg.proxy_uid.to_string();
    let exclude_inbound = match facts.annotation(annotations::EXCLUDE_INBOUND_PORTS) {
        Some(extra) if !extra.is_empty() => format!("{PROXY_PORTS},{extra}"),
        _ => PROXY_PORTS.to_string(),
    };
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        uid.clone(),
        "--proxy-gid".into(),
        uid,
        "--outbound-port".into(),
        "15001".into(),
        "--inbound-port".into(),
        "15006".into(),
        "--inbound-ports".into(),
        facts.inbound_ports(),
        "--exclude-inbound-ports".into(),
        exclude_inbound,
        "--include-outbound-cidrs".into(),
        facts
            .annotation(annotations::INCLUDE_OUTBOUND_IP_RANGES)
            .unwrap_or("*")
            .to_string(),
    ];
    for (flag, key) in [
        (
            "--exclude-outbound-cidrs",
            annotations::EXCLUDE_OUTBOUND_IP_RANGES,
        ),
        (
            "--exclude-outbound-ports",
            annotations::EXCLUDE_OUTBOUND_PORTS,
        ),
    ] {
        if let Some(v) = facts.annotation(key).filter(|v| !v.is_empty()) {
            args.push(flag.into());
            args.push(v.to_string());
        }
    }
    json!({
        "name": INIT_NAME,
        "image": cfg.proxy_image,
        "args": args,
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "cpu": "100m", "memory": "64Mi" }
        },
        "securityContext": {
            // iptables needs root and these two capabilities, nothing more.
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] }
        }
    })
}

/// The proxy container (or native sidecar, once `restartPolicy` is set).
pub fn proxy_container(
    cfg: &InjectConfig,
    facts: &PodFacts,
    probers: &BTreeMap<String, Value>,
) -> Value {
    // The names are the flags' environment variables of `mesh-proxy run`
    // (pilot-agent style), so the container needs no arguments beyond `run`.
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("NODE_NAME", "spec.nodeName"),
        json!({ "name": "WORKLOAD_NAME", "value": facts.workload }),
        json!({ "name": "XDS_ADDRESS", "value": cfg.xds_address }),
        json!({ "name": "CA_ADDRESS", "value": cfg.ca_address }),
        json!({ "name": "TRUST_DOMAIN", "value": cfg.trust_domain }),
        json!({ "name": "TOKEN_PATH", "value": "/var/run/secrets/tokens/mesh-token" }),
        json!({ "name": "CA_ROOT_CERT", "value": "/var/run/secrets/mesh/root-cert.pem" }),
        json!({ "name": "LABELS_PATH", "value": "/etc/mesh/pod/labels" }),
        json!({ "name": "INTERCEPTION_MODE", "value": "REDIRECT" }),
    ];
    if !facts.app_ports.is_empty() {
        let ports: Vec<String> = facts.app_ports.iter().map(u64::to_string).collect();
        env.push(json!({ "name": "MESH_APP_PORTS", "value": ports.join(",") }));
    }
    if !probers.is_empty() {
        // Key order is stable (BTreeMap), so re-injection is byte-identical.
        let probers = serde_json::to_string(probers).unwrap_or_default();
        env.push(json!({ "name": "MESH_KUBE_APP_PROBERS", "value": probers }));
    }
    let uid = cfg.proxy_uid;
    json!({
        "name": PROXY_NAME,
        "image": cfg.proxy_image,
        "args": ["run"],
        "env": env,
        "ports": [
            { "name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP" },
            { "name": "mesh-health", "containerPort": HEALTH_PORT, "protocol": "TCP" }
        ],
        "readinessProbe": {
            "httpGet": { "path": "/healthz/ready", "port": HEALTH_PORT },
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 30
        },
        "lifecycle": {
            // Stop taking new connections and let in-flight requests finish
            // before the kubelet's SIGTERM.
            "preStop": { "exec": { "command": ["mesh-proxy", "drain"] } }
        },
        "resources": {
            "requests": { "cpu": "50m", "memory": "32Mi" },
            "limits": { "cpu": "1", "memory": "256Mi" }
        },
        "securityContext": {
            "runAsUser": uid,
            "runAsGroup": uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "capabilities": { "drop": ["ALL"] }
        },
        "volumeMounts": [
            { "name": "mesh-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true },
            { "name": "mesh-root-cert", "mountPath": "/var/run/secrets/mesh", "readOnly": true },
            { "name": "mesh-podinfo", "mountPath": "/etc/mesh/pod", "readOnly": true },
            { "name": "mesh-data", "mountPath": "/var/lib/mesh" }
        ]
    })
}

/// The volumes the proxy mounts.
pub fn volumes(cfg: &InjectConfig) -> Vec<Value> {
    vec![
        json!({
            "name": "mesh-token",
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": cfg.ca_audience,
                "expirationSeconds": 43200,
                "path": "mesh-token"
            }}]}
        }),
        json!({ "name": "mesh-root-cert", "configMap": { "name": cfg.root_cert_configmap } }),
        json!({
            "name": "mesh-podinfo",
            "downwardAPI": { "items": [
                { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
                { "path": "annotations", "fieldRef": { "fieldPath": "metadata.annotations" } }
            ]}
        }),
        json!({ "name": "mesh-data", "emptyDir": { "medium": "Memory" } }),
    ]
}
