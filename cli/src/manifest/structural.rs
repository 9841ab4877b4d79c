//! Turning schemars' OpenAPI 3 output into a Kubernetes *structural* schema
//! (what `apiextensions.k8s.io/v1` requires): every node typed, no `$ref`,
//! no `additionalProperties` beside `properties`, no types inside
//! `anyOf`/`oneOf`, only formats the API server knows.

use serde_json::{Map, Value, json};

const KNOWN_FORMATS: [&str; 9] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "password",
    "binary",
];

/// Rewrites one schema node (recursively) into structural form.
pub fn structural(node: Value) -> Value {
    let Value::Object(mut obj) = node else {
        // `true` (anything goes) is the only non-object schema that remains.
        return json!({ "x-kubernetes-preserve-unknown-fields": true });
    };
    for key in [
        "$schema",
        "title",
        "$defs",
        "definitions",
        "examples",
        "example",
        "default",
    ] {
        obj.remove(key);
    }
    if obj
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        obj.remove("format");
    }
    // An Option<T> or a newtype arrives as a one-branch combinator; fold it in.
    for comb in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = obj.remove(comb) {
            let is_null = |b: &Value| {
                b.get("type").and_then(Value::as_str) == Some("null")
                    || b.get("enum") == Some(&json!([null]))
                    || b.as_object()
                        .is_some_and(|o| o.len() == 1 && o.contains_key("nullable"))
            };
            let total = branches.len();
            let real: Vec<Value> = branches.into_iter().filter(|b| !is_null(b)).collect();
            if real.len() < total {
                obj.insert("nullable".into(), json!(true));
            }
            match real.len() {
                0 => {}
                1 => {
                    if let Value::Object(inner) =
                        structural(real.into_iter().next().unwrap_or(Value::Null))
                    {
                        for (k, v) in inner {
                            obj.entry(k).or_insert(v);
                        }
                    }
                }
                _ => merge_alternatives(&mut obj, real),
            }
        }
    }
    // Maps keyed by numbers (`portLevelMtls: {8080: ...}`) come as
    // patternProperties, which Kubernetes does not allow: keys are strings on
    // the wire anyway, so a map of the value schema says the same.
    if let Some(Value::Object(patterns)) = obj.remove("patternProperties")
        && let Some(value_schema) = patterns.into_iter().next().map(|(_, v)| v)
        // schemars pairs the patterns with `additionalProperties: false`.
        && matches!(obj.get("additionalProperties"), None | Some(Value::Bool(false)))
    {
        obj.insert("additionalProperties".into(), value_schema);
    }
    if let Some(Value::Object(props)) = obj.remove("properties") {
        let props: Map<String, Value> =
            props.into_iter().map(|(k, v)| (k, structural(v))).collect();
        obj.insert("properties".into(), Value::Object(props));
        obj.remove("additionalProperties");
        obj.entry("type").or_insert(json!("object"));
    }
    match obj.remove("additionalProperties") {
        Some(Value::Bool(false)) | None => {}
        Some(Value::Bool(true)) => {
            obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        Some(schema) => {
            obj.insert("additionalProperties".into(), structural(schema));
            obj.entry("type").or_insert(json!("object"));
        }
    }
    if let Some(items) = obj.remove("items") {
        obj.insert("items".into(), structural(items));
        obj.entry("type").or_insert(json!("array"));
    }
    if !obj.contains_key("type") && !obj.contains_key("x-kubernetes-int-or-string") {
        obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    Value::Object(obj)
}

/// Several real alternatives (an untagged enum): integer-or-string becomes
/// Kubernetes' int-or-string, string enums merge, anything else is kept
/// open and left to the mesh's own validation (which the webhook runs).
fn merge_alternatives(obj: &mut Map<String, Value>, branches: Vec<Value>) {
    // A unit variant with a doc comment arrives as `{enum: [NAME]}`, untyped.
    let string_enum = |b: &Value| {
        b.get("enum")
            .and_then(Value::as_array)
            .is_some_and(|vs| vs.iter().all(Value::is_string))
    };
    let types: Vec<Option<&str>> = branches
        .iter()
        .map(|b| {
            b.get("type")
                .and_then(Value::as_str)
                .or(string_enum(b).then_some("string"))
        })
        .collect();
    if types
        .iter()
        .all(|t| matches!(t, Some("integer") | Some("string")))
        && types.contains(&Some("integer"))
        && types.contains(&Some("string"))
    {
        obj.insert("x-kubernetes-int-or-string".into(), json!(true));
        return;
    }
    if types.iter().all(|t| *t == Some("string")) {
        let values: Vec<Value> = branches
            .iter()
            .filter_map(|b| b.get("enum").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        obj.insert("type".into(), json!("string"));
        if values.len() == branches.len() {
            obj.insert("enum".into(), Value::Array(values));
        }
        return;
    }
    if types.iter().all(|t| *t == Some("object")) {
        // Externally tagged variants: each branch has one property; the union
        // of the properties describes every variant.
        let mut props = Map::new();
        for b in &branches {
            if let Some(Value::Object(p)) = b.get("properties") {
                for (k, v) in p {
                    props
                        .entry(k.clone())
                        .or_insert_with(|| structural(v.clone()));
                }
            }
        }
        obj.insert("type".into(), json!("object"));
        obj.insert("properties".into(), Value::Object(props));
        return;
    }
    obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_option_folds_into_its_type_and_unknown_formats_go() {
        let got = structural(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "weight": {"type": "integer", "format": "uint32", "minimum": 0, "nullable": true},
                "dest": {"anyOf": [{"type": "object", "properties": {"host": {"type": "string"}}}, {"enum": [null], "nullable": true}]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "anything": true
            }
        }));
        assert_eq!(
            got,
            json!({
                "type": "object",
                "properties": {
                    "weight": {"type": "integer", "minimum": 0, "nullable": true},
                    "dest": {"type": "object", "nullable": true, "properties": {"host": {"type": "string"}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "anything": {"x-kubernetes-preserve-unknown-fields": true}
                }
            })
        );
    }

    #[test]
    fn documented_unit_variants_merge_into_one_string_enum() {
        let got = structural(json!({"oneOf": [
            {"description": "Random.", "enum": ["RANDOM"]},
            {"description": "Round robin.", "type": "string", "enum": ["ROUND_ROBIN"]}
        ]}));
        assert_eq!(
            got,
            json!({"type": "string", "enum": ["RANDOM", "ROUND_ROBIN"]})
        );
    }

    #[test]
    fn number_keyed_maps_become_string_keyed_maps() {
        let got = structural(json!({"type": "object", "additionalProperties": false,
            "patternProperties": {"^\\d+$": {"type": "object", "properties": {"mode": {"type": "string"}}}}}));
        assert_eq!(
            got,
            json!({"type": "object", "additionalProperties": {"type": "object", "properties": {"mode": {"type": "string"}}}})
        );
    }

    #[test]
    fn integer_or_string_becomes_int_or_string() {
        let got = structural(json!({"oneOf": [{"type": "integer"}, {"type": "string"}]}));
        assert_eq!(got, json!({"x-kubernetes-int-or-string": true}));
    }
}
