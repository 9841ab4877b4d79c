//! The whole Kubernetes install as objects: the namespace, the CRDs, meshd's
//! RBAC, its config, Deployment, Service, disruption budget and webhooks.
//! The Helm chart in deploy/helm/mesh renders the same objects (a test
//! compares them).

use serde_json::{Value, json};

use super::values::Values;
use super::{rbac, webhooks};

/// The name of meshd's Deployment, Service, ServiceAccount and Role.
pub const NAME: &str = "meshd";
/// The ConfigMap holding mesh-wide settings.
pub const MESH_CONFIG: &str = "mesh-config";
/// meshd's port for the Kubernetes webhooks (HTTPS).
pub const WEBHOOK_PORT: u16 = 15017;
/// meshd's ports, by name (Istio's numbers; see docs/architecture.md).
pub const PORTS: [(&str, u16); 4] = [
    ("grpc-xds", 15010),
    ("https-xds-ca", 15012),
    ("http-monitoring", 15014),
    ("https-webhook", WEBHOOK_PORT),
];

/// The labels every object of the install carries.
pub fn labels(v: &Values) -> Value {
    json!({
        "app": NAME,
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": "mesh",
        "app.kubernetes.io/version": v.str("global.tag"),
    })
}

fn selector() -> Value {
    json!({ "app": NAME })
}

fn config_map(v: &Values, ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": MESH_CONFIG, "namespace": ns, "labels": labels(v) },
        "data": {
            "trustDomain": v.str("meshConfig.trustDomain"),
            "mtlsMode": v.str("meshConfig.mtlsMode"),
            "outboundTrafficPolicy": v.str("meshConfig.outboundTrafficPolicy"),
            "accessLogEnabled": v.str("meshConfig.accessLogEnabled"),
            "rootCertConfigMap": "mesh-ca-root-cert",
            // The sidecar image meshd's injector uses: the install's hub and tag.
            "proxyImage": proxy_image(v),
        },
    })
}

/// The sidecar image of an install: `<hub>/mesh-proxy:<tag>`.
pub fn proxy_image(v: &Values) -> String {
    format!("{}/mesh-proxy:{}", v.str("global.hub"), v.str("global.tag"))
}

fn service(v: &Values, ns: &str) -> Value {
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|(name, port)| json!({ "name": name, "port": port, "targetPort": port, "protocol": "TCP" }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
        "spec": { "selector": selector(), "ports": ports },
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

fn deployment(v: &Values, ns: &str) -> Value {
    let image = format!("{}/meshd:{}", v.str("global.hub"), v.str("global.tag"));
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|(name, port)| json!({ "name": name, "containerPort": port, "protocol": "TCP" }))
        .collect();
    let probe = |period: u16| {
        json!({
            "httpGet": { "path": "/healthz/ready", "port": 15014 },
            "initialDelaySeconds": 1,
            "periodSeconds": period,
            "failureThreshold": 3,
        })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
        "spec": {
            "replicas": v.get("meshd.replicas"),
            "selector": { "matchLabels": selector() },
            "template": {
                "metadata": { "labels": labels(v) },
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "meshd",
                        "image": image,
                        "imagePullPolicy": v.str("global.imagePullPolicy"),
                        // meshd's Kubernetes mode (docs/meshd.md,
                        // "Kubernetes mode").
                        "args": [
                            "--kubernetes",
                            "--xds-addr=0.0.0.0:15010",
                            "--xds-tls-addr=0.0.0.0:15012",
                            "--http-addr=0.0.0.0:15014",
                            "--webhook-addr=0.0.0.0:15017",
                            "--mesh-config-dir=/etc/mesh/config",
                            "--data-dir=/var/lib/mesh",
                        ],
                        "env": [
                            field_env("POD_NAME", "metadata.name"),
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                            { "name": "RUST_LOG", "value": v.str("meshd.logLevel") },
                        ],
                        "ports": ports,
                        "readinessProbe": probe(3),
                        "livenessProbe": probe(10),
                        "resources": v.get("meshd.resources"),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "mesh-config", "mountPath": "/etc/mesh/config", "readOnly": true },
                            { "name": "data", "mountPath": "/var/lib/mesh" },
                        ],
                    }],
                    "volumes": [
                        { "name": "mesh-config", "configMap": { "name": MESH_CONFIG } },
                        { "name": "data", "emptyDir": {} },
                    ],
                },
            },
        },
    })
}

fn disruption_budget(v: &Values, ns: &str) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
        "spec": { "minAvailable": v.get("pdb.minAvailable"), "selector": { "matchLabels": selector() } },
    })
}

/// Every object of the install, in the order `kubectl apply` wants them
/// (namespace and CRDs first, webhooks last so they never point at a
/// meshd that does not exist yet).
pub fn objects(v: &Values, ns: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if v.flag("global.createNamespace") {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns, "labels": labels(v) },
        }));
    }
    out.extend(super::crd::all());
    out.extend(rbac::objects(v, ns));
    out.push(config_map(v, ns));
    out.push(service(v, ns));
    out.push(deployment(v, ns));
    if v.flag("pdb.enabled") {
        out.push(disruption_budget(v, ns));
    }
    out.extend(webhooks::objects(v, ns));
    out
}
