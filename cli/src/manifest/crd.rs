//! CustomResourceDefinitions for every kind of the model, generated from
//! the model's own types so the API server and the mesh agree on the shape
//! (a test fails when `deploy/crds/crds.yaml` drifts from this output).

use mesh_model::Kind;
use mesh_model::networking::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
    WorkloadEntrySpec,
};
use mesh_model::policy::RateLimitPolicySpec;
use mesh_model::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::structural::structural;

fn spec_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    structural(generator.into_root_schema_for::<T>().to_value())
}

fn schema_for(kind: Kind) -> Value {
    match kind {
        Kind::VirtualService => spec_schema::<VirtualServiceSpec>(),
        Kind::DestinationRule => spec_schema::<DestinationRuleSpec>(),
        Kind::ServiceEntry => spec_schema::<ServiceEntrySpec>(),
        Kind::WorkloadEntry => spec_schema::<WorkloadEntrySpec>(),
        Kind::Gateway => spec_schema::<GatewaySpec>(),
        Kind::Sidecar => spec_schema::<SidecarSpec>(),
        Kind::PeerAuthentication => spec_schema::<PeerAuthenticationSpec>(),
        Kind::AuthorizationPolicy => spec_schema::<AuthorizationPolicySpec>(),
        Kind::RequestAuthentication => spec_schema::<RequestAuthenticationSpec>(),
        Kind::RateLimitPolicy => spec_schema::<RateLimitPolicySpec>(),
    }
}

/// kubectl columns, as Istio's CRDs print them.
fn printer_columns(kind: Kind) -> Vec<Value> {
    let col = |name: &str, ty: &str, path: &str, desc: &str| json!({ "name": name, "type": ty, "jsonPath": path, "description": desc });
    let mut cols = match kind {
        Kind::VirtualService => vec![
            col(
                "Gateways",
                "string",
                ".spec.gateways",
                "The gateways the routes apply to",
            ),
            col(
                "Hosts",
                "string",
                ".spec.hosts",
                "The destination hosts the routes apply to",
            ),
        ],
        Kind::DestinationRule => vec![col(
            "Host",
            "string",
            ".spec.host",
            "The service the policy applies to",
        )],
        Kind::ServiceEntry => vec![
            col("Hosts", "string", ".spec.hosts", "The hosts of the service"),
            col(
                "Location",
                "string",
                ".spec.location",
                "Whether the service is part of the mesh",
            ),
            col(
                "Resolution",
                "string",
                ".spec.resolution",
                "How endpoints are found",
            ),
        ],
        Kind::PeerAuthentication => vec![col("Mode", "string", ".spec.mtls.mode", "The mTLS mode")],
        Kind::AuthorizationPolicy => vec![col(
            "Action",
            "string",
            ".spec.action",
            "ALLOW, DENY, AUDIT or CUSTOM",
        )],
        _ => vec![],
    };
    cols.push(col(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "Time since creation",
    ));
    cols
}

/// The CRD of one kind, serving every apiVersion the model accepts, the
/// first one (the model's preferred version) as storage.
pub fn custom_resource_definition(kind: Kind) -> Value {
    let group = kind.api_group();
    let plural = kind.plural();
    let spec = schema_for(kind);
    // The model lists versions newest first; the first is stored.
    let versions: Vec<Value> = kind
        .api_versions()
        .iter()
        .enumerate()
        .map(|(i, version)| {
            json!({
                "name": version,
                "served": true,
                "storage": i == 0,
                "subresources": { "status": {} },
                "additionalPrinterColumns": printer_columns(kind),
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "description": format!("{} ({group}); see the mesh's docs and Istio's reference for the fields.", kind.as_str()),
                    "properties": {
                        "spec": spec,
                        "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
                    },
                    "required": ["spec"]
                }}
            })
        })
        .collect();
    let categories = if group == mesh_model::kind::POLICY_GROUP {
        json!(["mesh-dev"])
    } else {
        json!(["istio-io", group.replace('.', "-")])
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{group}"),
            "labels": { "app.kubernetes.io/part-of": "mesh" }
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.as_str(),
                "listKind": format!("{}List", kind.as_str()),
                "plural": plural,
                "singular": kind.as_str().to_lowercase(),
                "shortNames": [kind.short_name()],
                "categories": categories
            },
            "versions": versions
        }
    })
}

/// Every CRD, in the model's kind order.
pub fn all() -> Vec<Value> {
    Kind::ALL
        .iter()
        .map(|k| custom_resource_definition(*k))
        .collect()
}
