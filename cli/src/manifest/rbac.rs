//! meshd's identity and permissions: its ServiceAccount, a ClusterRole for
//! what it watches and writes cluster-wide, and a Role in its own namespace
//! for leader election and the CA key.

use serde_json::{Value, json};

use super::install::{NAME, labels};
use super::values::Values;

/// The API groups of the mesh's CRDs, sorted (from the CRDs themselves, so a
/// new group is granted when the model grows one).
pub fn mesh_groups() -> Vec<String> {
    let mut groups: Vec<String> = super::crd::all()
        .iter()
        .filter_map(|c| c["spec"]["group"].as_str().map(str::to_string))
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding.
pub fn objects(v: &Values, ns: &str) -> Vec<Value> {
    let cluster_name = format!("{NAME}-{ns}");
    let subject = json!([{ "kind": "ServiceAccount", "name": NAME, "namespace": ns }]);
    let mesh_groups = mesh_groups();
    let groups: Vec<&str> = mesh_groups.iter().map(String::as_str).collect();
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": cluster_name, "labels": labels(v) },
            "rules": [
                rule(&["apiextensions.k8s.io"], &["customresourcedefinitions"], &READ),
                rule(&groups, &["*"], &READ),
                rule(&groups, &["*/status"], &["get", "update", "patch"]),
                rule(&[""], &["services", "pods", "namespaces", "nodes"], &READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                // Warning Events about invalid custom resources.
                rule(&[""], &["events"], &["create", "patch"]),
                // The root cert is published as a ConfigMap in every namespace.
                rule(&[""], &["configmaps"], &["get", "list", "watch", "create", "update", "patch"]),
                // meshd writes its serving CA into the webhooks' caBundle.
                rule(
                    &["admissionregistration.k8s.io"],
                    &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                    &["get", "list", "watch", "update", "patch"],
                ),
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": cluster_name, "labels": labels(v) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name },
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
            "rules": [
                rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update", "patch"]),
                rule(&[""], &["secrets"], &["get", "list", "watch", "create", "update"]),
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels(v) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME },
            "subjects": subject,
        }),
    ]
}
