//! Envoy's `/config_dump` query parameters: `resource`, `mask`,
//! `name_regex` and `include_eds`, with Envoy's answers to bad ones.
//!
//! `name_regex` and `include_eds` shape the dump as it is built;
//! `resource` and `mask` then select from its JSON ([`select`]).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::schema::{self, Kind};

/// Why a `/config_dump` request cannot be answered; the text is what Envoy
/// answers.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// `name_regex` is not a regular expression (400).
    #[error("Error while parsing name_regex from {regex}: {reason}")]
    NameRegex {
        /// The parameter.
        regex: String,
        /// The parser's complaint.
        reason: String,
    },
    /// `resource` names a field that is not repeated (400).
    #[error("{0} is not a repeated field. Use ?mask={0} to get only this field")]
    NotRepeated(String),
    /// `resource` names no field of any dump (404).
    #[error("{0} not found in config dump")]
    UnknownResource(String),
    /// `mask` does not fit the selected resource (400).
    #[error("FieldMask {0} could not be successfully used.")]
    Mask(String),
    /// `mask` fits none of the dumps (400).
    #[error("FieldMask {0} could not be successfully applied to any configs.")]
    MaskFitsNothing(String),
    /// The dump could not be printed as JSON (500).
    #[error("cannot encode config: {0}")]
    Encode(String),
}

impl DumpError {
    /// The HTTP status Envoy answers with.
    pub fn status(&self) -> u16 {
        match self {
            DumpError::UnknownResource(_) => 404,
            DumpError::Encode(_) => 500,
            _ => 400,
        }
    }
}

/// The parameters of one `/config_dump` request.
#[derive(Debug, Clone, Default)]
pub struct DumpQuery {
    /// `resource=`: only the entries of this repeated field.
    pub resource: Option<String>,
    /// `mask=`: FieldMask paths (comma separated in the query).
    pub mask: Option<Vec<String>>,
    /// `name_regex=`: only resources whose whole name matches.
    pub name_regex: Option<Regex>,
    /// `include_eds`: add the `EndpointsConfigDump`.
    pub include_eds: bool,
}

/// `%XX` decoding (a `+` stays a `+`, as in Envoy's admin).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or_default() * 16 + hex(l).unwrap_or_default();
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl DumpQuery {
    /// The parameters of a request's query string (the first value of each
    /// wins, as in Envoy).
    pub fn parse(query: Option<&str>) -> Result<Self, DumpError> {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for kv in query
            .unwrap_or_default()
            .split('&')
            .filter(|s| !s.is_empty())
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            params.entry(decode(k)).or_insert_with(|| decode(v));
        }
        let name_regex = match params.get("name_regex").filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => {
                Some(
                    Regex::new(&format!("^(?:{r})$")).map_err(|e| DumpError::NameRegex {
                        regex: r.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
        };
        Ok(Self {
            resource: params.get("resource").cloned(),
            mask: params.get("mask").map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            name_regex,
            include_eds: params.contains_key("include_eds"),
        })
    }

    /// Whether a resource named `name` is dumped under `name_regex`.
    pub fn wants(&self, name: &str) -> bool {
        self.name_regex.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// A prefix tree of mask paths; an empty subtree keeps the whole field.
#[derive(Debug, Default)]
struct Tree(BTreeMap<String, Tree>);

impl Tree {
    fn of(paths: &[String]) -> Self {
        let mut root = Tree::default();
        for path in paths {
            let mut node = &mut root;
            let frags: Vec<&str> = path.split('.').collect();
            for (i, frag) in frags.iter().enumerate() {
                let whole = node.0.get(*frag).is_some_and(|t| t.0.is_empty());
                if whole {
                    break;
                }
                node = node.0.entry((*frag).to_owned()).or_default();
                if i + 1 == frags.len() {
                    // The whole field: forget longer paths below it.
                    node.0.clear();
                }
            }
        }
        root
    }

    /// Keeps only the masked fields of `obj` (and an `Any`'s `@type`).
    fn trim(&self, obj: &mut Map<String, Value>) {
        obj.retain(|k, _| k == "@type" || self.0.contains_key(k));
        for (k, sub) in &self.0 {
            if sub.0.is_empty() {
                continue;
            }
            match obj.get_mut(k) {
                Some(Value::Object(child)) => sub.trim(child),
                // Below a packed resource a path may cross a repeated
                // field: it applies to each entry.
                Some(Value::Array(items)) => items.iter_mut().for_each(|item| {
                    if let Value::Object(child) = item {
                        sub.trim(child);
                    }
                }),
                _ => {}
            }
        }
    }
}

/// Applies `resource` and `mask` to the JSON of a whole `ConfigDump`
/// (`{"configs": [...]}`), as Envoy does: with `resource`, the configs are
/// that field's entries (each with its own `@type`), masked one by one;
/// with only `mask`, each dump is masked and those it does not fit are left
/// out.
pub fn select(dump: Value, query: &DumpQuery) -> Result<Value, DumpError> {
    let configs = match dump {
        Value::Object(mut o) => match o.remove("configs") {
            Some(Value::Array(c)) => c,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mask = query.mask.as_ref();
    let mask_text = || mask.map(|m| m.join(",")).unwrap_or_default();
    let tree = mask.map(|m| Tree::of(m));
    let mut out = Vec::new();
    if let Some(resource) = &query.resource {
        let found = configs.into_iter().find_map(|c| {
            let msg = schema::section(c["@type"].as_str()?)?;
            Some((msg.field(resource)?, c))
        });
        let (elem, mut section) = match found {
            Some((Kind::Repeated(elem), section)) => (elem, section),
            Some(_) => return Err(DumpError::NotRepeated(resource.clone())),
            None => return Err(DumpError::UnknownResource(resource.clone())),
        };
        if mask.is_some_and(|paths| !paths.iter().all(|p| elem.has_path(p))) {
            return Err(DumpError::Mask(mask_text()));
        }
        let items = match section.get_mut(resource).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        for item in items {
            let Value::Object(mut fields) = item else {
                continue;
            };
            if let Some(tree) = &tree {
                tree.trim(&mut fields);
            }
            let mut wrapped = Map::new();
            wrapped.insert(
                "@type".into(),
                format!("type.googleapis.com/{}", elem.type_name).into(),
            );
            wrapped.extend(fields);
            out.push(Value::Object(wrapped));
        }
    } else {
        for c in configs {
            let (Some(paths), Some(tree)) = (mask, &tree) else {
                out.push(c);
                continue;
            };
            let fits = c["@type"]
                .as_str()
                .and_then(schema::section)
                .is_some_and(|msg| paths.iter().all(|p| msg.has_path(p)));
            if let (true, Value::Object(mut fields)) = (fits, c) {
                tree.trim(&mut fields);
                out.push(Value::Object(fields));
            }
        }
        if out.is_empty() && mask.is_some() {
            return Err(DumpError::MaskFitsNothing(mask_text()));
        }
    }
    Ok(serde_json::json!({ "configs": out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> DumpQuery {
        DumpQuery::parse(Some(s)).unwrap()
    }

    fn dump() -> Value {
        json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
             "bootstrap": {"node": {"id": "n1", "cluster": "c"}, "admin": {}},
             "last_updated": "2026-01-01T00:00:00Z"},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "version_info": "v1",
             "dynamic_active_clusters": [
                {"version_info": "v1", "last_updated": "2026-01-01T00:00:00Z",
                 "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                             "name": "a", "connect_timeout": "1s"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
             "dynamic_active_secrets": [{"name": "default"}]}
        ]})
    }

    #[test]
    fn query_parameters_are_decoded_and_the_first_value_wins() {
        let p = q(
            "resource=dynamic_active_clusters&mask=cluster.name%2Cversion_info&resource=x&include_eds",
        );
        assert_eq!(p.resource.as_deref(), Some("dynamic_active_clusters"));
        assert_eq!(p.mask.unwrap(), ["cluster.name", "version_info"]);
        assert!(p.include_eds);
        assert!(!q("").include_eds);
        let p = q("name_regex=.*reviews.*");
        assert!(p.wants("outbound|9080||reviews.default.svc.cluster.local"));
        assert!(!p.wants("ratings"));
        let p = q("name_regex=review");
        assert!(
            !p.wants("reviews"),
            "the whole name must match, as in Envoy"
        );
        assert!(q("name_regex=").wants("anything"));
    }

    #[test]
    fn a_bad_name_regex_is_a_400() {
        let e = DumpQuery::parse(Some("name_regex=(")).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(
            e.to_string()
                .starts_with("Error while parsing name_regex from (:"),
            "{e}"
        );
    }

    #[test]
    fn resource_returns_only_that_fields_entries_each_with_its_type() {
        let out = select(dump(), &q("resource=dynamic_active_clusters")).unwrap();
        assert_eq!(
            out,
            json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                "version_info": "v1", "last_updated": "2026-01-01T00:00:00Z",
                "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                            "name": "a", "connect_timeout": "1s"}}]})
        );
        // A known field with no entries: an empty list, not an error.
        let out = select(dump(), &q("resource=static_clusters")).unwrap();
        assert_eq!(out, json!({"configs": []}));
    }

    #[test]
    fn resource_with_mask_trims_each_entry_inside_its_packed_resource() {
        let out = select(
            dump(),
            &q("resource=dynamic_active_clusters&mask=cluster.name"),
        )
        .unwrap();
        assert_eq!(
            out["configs"][0],
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"}})
        );
    }

    #[test]
    fn mask_alone_trims_the_dumps_it_fits_and_drops_the_others() {
        let out = select(dump(), &q("mask=bootstrap.node.id")).unwrap();
        assert_eq!(
            out,
            json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                "bootstrap": {"node": {"id": "n1"}}}]})
        );
        let out = select(dump(), &q("mask=version_info")).unwrap();
        assert_eq!(out["configs"].as_array().unwrap().len(), 1);
        assert_eq!(out["configs"][0]["version_info"], "v1");
        assert!(out["configs"][0].get("dynamic_active_clusters").is_none());
    }

    #[test]
    fn bad_resource_or_mask_is_refused_with_envoys_status_and_text() {
        let e = select(dump(), &q("resource=nope")).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().as_str()),
            (404, "nope not found in config dump")
        );
        let e = select(dump(), &q("resource=version_info")).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.to_string(),
            "version_info is not a repeated field. Use ?mask=version_info to get only this field"
        );
        let e = select(dump(), &q("resource=dynamic_active_clusters&mask=nope")).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().as_str()),
            (400, "FieldMask nope could not be successfully used.")
        );
        let e = select(dump(), &q("mask=nope")).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().as_str()),
            (
                400,
                "FieldMask nope could not be successfully applied to any configs."
            )
        );
        // EDS is only dumped with include_eds: without it, its fields are unknown.
        let e = select(dump(), &q("resource=dynamic_endpoint_configs")).unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
