//! The edge where text (YAML or JSON, one or many documents) becomes
//! validated resources for a store. Parsing and validation are the model's,
//! so meshd, the webhook and `meshctl analyze` agree.

use std::str::FromStr;

use mesh_model::{Kind, Resource};

use crate::store::{NewObject, ResourceKey, StoredObject};

/// Parses and validates every document of `text`; `source` names it in
/// errors (a file name, `request`). All-or-nothing: any error rejects all.
pub fn parse(text: &str, source: &str) -> Result<Vec<NewObject>, Vec<String>> {
    let resources = mesh_model::parse_documents(text, source)
        .map_err(|es| es.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(resources.len());
    for mut res in resources {
        let problems = validate(&res);
        if !problems.is_empty() {
            errors.extend(problems.into_iter().map(|p| format!("{source} {res}: {p}")));
            continue;
        }
        // Store the namespace explicitly so every reader sees the same key.
        let ns = res.namespace().to_string();
        res.meta_mut().namespace = Some(ns);
        out.push(NewObject {
            key: key_of(&res),
            object: res.to_json_value(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The model's per-resource validation, as `path: message` strings.
fn validate(res: &Resource) -> Vec<String> {
    res.validate().iter().map(|e| e.to_string()).collect()
}

/// The store key of a resource.
pub fn key_of(res: &Resource) -> ResourceKey {
    ResourceKey {
        kind: res.kind().as_str().to_string(),
        namespace: res.namespace().to_string(),
        name: res.name().to_string(),
    }
}

/// Decodes a stored object back into its typed resource.
pub fn decode(obj: &StoredObject) -> Result<Resource, String> {
    mesh_model::parse_json_resource(&obj.object).map_err(|e| format!("{}: {e}", obj.key))
}

/// Canonical kind name for user input such as `vs`, `virtualservices` or
/// `VirtualService`; `None` for an unknown kind.
pub fn canonical_kind(input: &str) -> Option<String> {
    Kind::from_str(input).ok().map(|k| k.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_doc_yaml_becomes_objects_with_default_namespace() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b, namespace: x}\nspec: {host: b}\n";
        let objs = parse(text, "t.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].key.namespace, "default");
        assert_eq!(objs[0].object["metadata"]["namespace"], "default");
        assert_eq!(objs[1].key.kind, "DestinationRule");
    }

    #[test]
    fn invalid_document_rejects_the_whole_batch_with_field_paths() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\nspec: {hostz: [a]}\n";
        let errs = parse(text, "t.yaml").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("t.yaml#2"), "{errs:?}");
        assert!(errs[0].contains("hostz"), "{errs:?}");
    }

    #[test]
    fn model_validation_rejects_with_field_paths() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - {destination: {host: a}, weight: 70}\n    - {destination: {host: b}, weight: 20}\n";
        let errs = parse(text, "t.yaml").unwrap_err();
        assert!(errs.iter().any(|e| e.contains("spec.http[0]")), "{errs:?}");
    }

    #[test]
    fn kind_short_names_resolve() {
        assert_eq!(canonical_kind("vs").as_deref(), Some("VirtualService"));
        assert_eq!(
            canonical_kind("destinationrules").as_deref(),
            Some("DestinationRule")
        );
        assert_eq!(canonical_kind("nope"), None);
    }
}
