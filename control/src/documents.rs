//! The edge where text (YAML or JSON, one or many documents) becomes
//! validated resources for a store. Validation is the model's, so meshd, the
//! webhook and `meshctl analyze` agree.

use crate::store::{NewObject, ResourceKey};

/// Parses and validates every document of `text`; `source` names it in
/// errors (a file name, `request`). All-or-nothing: any error rejects all.
pub fn parse(text: &str, source: &str) -> Result<Vec<NewObject>, Vec<String>> {
    let values = parse_values(text).map_err(|e| vec![format!("{source}: {e}")])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        match to_object(value) {
            Ok(o) => out.push(o),
            Err(es) => errors.extend(es.into_iter().map(|e| format!("{source}#{i}: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Canonical kind name for user input such as `vs`, `virtualservices` or
/// `VirtualService`; `None` for an unknown kind.
pub fn canonical_kind(input: &str) -> Option<String> {
    let lower = input.to_ascii_lowercase();
    KINDS
        .iter()
        .find(|(kind, short)| {
            let k = kind.to_ascii_lowercase();
            lower == k || lower == format!("{k}s") || lower == *short
        })
        .map(|(kind, _)| kind.to_string())
}

/// Kinds meshd stores, with their short names.
const KINDS: &[(&str, &str)] = &[
    ("VirtualService", "vs"),
    ("DestinationRule", "dr"),
    ("ServiceEntry", "se"),
    ("WorkloadEntry", "we"),
    ("Sidecar", "sidecar"),
    ("Gateway", "gw"),
    ("PeerAuthentication", "pa"),
    ("AuthorizationPolicy", "ap"),
    ("RequestAuthentication", "ra"),
];

fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Ok(match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        });
    }
    serde_saphyr::from_multiple::<serde_json::Value>(text).map_err(|e| e.to_string())
}

fn to_object(mut value: serde_json::Value) -> Result<NewObject, Vec<String>> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| vec!["kind: required".to_string()])?;
    let kind = canonical_kind(kind).ok_or_else(|| vec![format!("kind: unknown kind {kind:?}")])?;
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| vec!["metadata.name: required".to_string()])?
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_string();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("namespace".into(), namespace.clone().into());
    }
    Ok(NewObject {
        key: ResourceKey {
            kind,
            namespace,
            name,
        },
        object: value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_doc_yaml_becomes_objects_with_default_namespace() {
        let text = "kind: VirtualService\nmetadata: {name: a}\nspec: {}\n---\nkind: dr\nmetadata: {name: b, namespace: x}\n";
        let objs = parse(text, "t.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].key.namespace, "default");
        assert_eq!(objs[1].key.kind, "DestinationRule");
    }

    #[test]
    fn invalid_document_rejects_the_whole_batch_with_field_paths() {
        let text =
            "kind: VirtualService\nmetadata: {name: a}\n---\nkind: VirtualService\nmetadata: {}\n";
        let errs = parse(text, "t.yaml").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("t.yaml#1"), "{errs:?}");
        assert!(errs[0].contains("metadata.name"), "{errs:?}");
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
