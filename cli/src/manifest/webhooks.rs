//! The admission webhooks meshd serves on 15017: sidecar injection
//! (`/inject`) and validation of the mesh's resources (`/validate`).
//! `caBundle` is left empty: meshd patches it with its serving CA at start.

use serde_json::{Value, json};

use super::install::{NAME, WEBHOOK_PORT, labels};
use super::rbac::mesh_groups;
use super::values::Values;

/// The MutatingWebhookConfiguration's name.
pub const INJECTOR: &str = "mesh-sidecar-injector";
/// The ValidatingWebhookConfiguration's name.
pub const VALIDATOR: &str = "mesh-validator";

fn client_config(ns: &str, path: &str) -> Value {
    json!({ "service": { "name": NAME, "namespace": ns, "path": path, "port": WEBHOOK_PORT } })
}

/// One injection webhook for namespaces carrying `label=enabled`; pods opt
/// out with `sidecar.istio.io/inject: "false"` as under Istio.
fn injector(v: &Values, ns: &str, name: &str, label: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": client_config(ns, "/inject"),
        "rules": [{
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
        }],
        "namespaceSelector": { "matchLabels": { label: "enabled" } },
        "objectSelector": { "matchExpressions": [{
            "key": mesh_inject::annotations::ISTIO_INJECT,
            "operator": "NotIn",
            "values": ["false"],
        }] },
        "failurePolicy": v.str("webhooks.failurePolicy"),
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "reinvocationPolicy": "Never",
        "timeoutSeconds": 10,
    })
}

/// Both webhook configurations (empty when `webhooks.enabled` is false).
pub fn objects(v: &Values, ns: &str) -> Vec<Value> {
    if !v.flag("webhooks.enabled") {
        return Vec::new();
    }
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": INJECTOR, "labels": labels(v) },
            "webhooks": [
                // Sorted by name, as the Helm chart's `range` emits them.
                injector(v, ns, "istio-namespace.sidecar-injector.mesh.dev", "istio-injection"),
                injector(v, ns, "namespace.sidecar-injector.mesh.dev", "mesh-injection"),
            ],
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": VALIDATOR, "labels": labels(v) },
            "webhooks": [{
                "name": "validation.mesh.dev",
                "clientConfig": client_config(ns, "/validate"),
                "rules": [{
                    "apiGroups": mesh_groups(),
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["*"],
                }],
                "failurePolicy": v.str("webhooks.failurePolicy"),
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }],
        }),
    ]
}
