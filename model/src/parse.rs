//! Reading resources from YAML or JSON text.
//!
//! Documents are numbered from 1 and only non-empty documents count, so in a
//! stream `a --- (empty) --- b`, `b` is document `#2`. A `kind: List` document
//! (as `kubectl get -o yaml` prints) contributes each of its `items` under its
//! own number. Messages name the location as `file#N Kind ns/name: path: message`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kind::Kind;
use crate::meta::{DEFAULT_NAMESPACE, Object};
use crate::resource::{Resource, SourcedResource};

/// A problem at a field of a resource, e.g. `spec.http[1].route[0].weight`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Path of the field from the resource's root.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl FieldError {
    /// A problem `message` at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What is wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The text is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The document is not a mapping (e.g. a bare string or list).
    #[error("a resource must be a mapping with apiVersion, kind, metadata and spec")]
    NotAMapping,
    /// `apiVersion` or `kind` is absent or not a string.
    #[error("missing or non-string field \"{0}\"")]
    MissingField(&'static str),
    /// `kind` names no kind the mesh knows.
    #[error("unknown kind {:?} (expected one of: {})", .0, crate::kind::kind_list())]
    UnknownKind(String),
    /// The document is not a mesh resource at all (e.g. a Kubernetes
    /// `Deployment`): its API group is neither Istio's nor the mesh's.
    /// `meshctl analyze` skips these; stores reject them.
    #[error("not a mesh resource (apiVersion {api_version:?}, kind {kind:?})")]
    Foreign {
        /// The `apiVersion` as written.
        api_version: String,
        /// The `kind` as written.
        kind: String,
    },
    /// `apiVersion` is not accepted for the kind.
    #[error("apiVersion {api_version:?} is not supported for {kind} (use {})", kind.preferred_api_version())]
    ApiVersion {
        /// The kind.
        kind: Kind,
        /// The `apiVersion` as written.
        api_version: String,
    },
    /// A field has the wrong type, is unknown or is missing.
    #[error(transparent)]
    Decode(FieldError),
    /// The resource decoded but breaks a validation rule.
    #[error(transparent)]
    Invalid(FieldError),
}

/// A problem with one document, located by source, document and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// The file (or other source) name.
    pub source: String,
    /// 1-based document index; `None` when the whole text failed to parse.
    pub doc_index: Option<usize>,
    /// `Kind ns/name` when the document got that far.
    pub resource: Option<String>,
    /// What is wrong.
    pub problem: ProblemKind,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(i) = self.doc_index {
            write!(f, "#{i}")?;
        }
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// Parses every resource in `text` (YAML, possibly a `---` stream, or JSON)
/// and returns them, or every problem found. `source` names the text in
/// messages (usually the file name).
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Resource>, Vec<ModelError>> {
    let (resources, errors) = parse_sourced(text, source);
    if errors.is_empty() {
        Ok(resources.into_iter().map(|r| r.resource).collect())
    } else {
        Err(errors)
    }
}

/// Like [`parse_documents`] but keeps going: returns the resources that
/// parsed, with their location, and the problems of the others.
pub fn parse_sourced(text: &str, source: &str) -> (Vec<SourcedResource>, Vec<ModelError>) {
    let docs = match split_documents(text) {
        Ok(docs) => docs,
        Err(problem) => {
            let err = ModelError {
                source: source.to_string(),
                doc_index: None,
                resource: None,
                problem,
            };
            return (Vec::new(), vec![err]);
        }
    };
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let doc_index = i + 1;
        match parse_json_resource(doc) {
            Ok(resource) => resources.push(SourcedResource {
                source: source.to_string(),
                doc_index,
                resource,
            }),
            Err(problem) => errors.push(ModelError {
                source: source.to_string(),
                doc_index: Some(doc_index),
                resource: describe(doc),
                problem,
            }),
        }
    }
    (resources, errors)
}

/// Parses and validates: the resources that parsed and passed validation,
/// and a located error for each parse or validation problem (a resource with
/// validation problems is left out of the first list).
pub fn load_documents(text: &str, source: &str) -> (Vec<SourcedResource>, Vec<ModelError>) {
    let (parsed, mut errors) = parse_sourced(text, source);
    let mut valid = Vec::new();
    for r in parsed {
        let problems = r.resource.validate();
        if problems.is_empty() {
            valid.push(r);
            continue;
        }
        for p in problems {
            errors.push(ModelError {
                source: r.source.clone(),
                doc_index: Some(r.doc_index),
                resource: Some(r.resource.display_name()),
                problem: ProblemKind::Invalid(p),
            });
        }
    }
    (valid, errors)
}

/// The documents of `text` as JSON values, `kind: List` expanded.
fn split_documents(text: &str) -> Result<Vec<Value>, ProblemKind> {
    let trimmed = text.trim_start();
    let raw: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            match v.map_err(|e| ProblemKind::Json(e.to_string()))? {
                Value::Array(items) => out.extend(items),
                v => out.push(v),
            }
        }
        out
    } else {
        // The parser's default budget (1,024 documents, 250,000 nodes) is
        // tuned against hostile input; a mesh's config dump is legitimately
        // larger, so allow a few thousand times the bookinfo sample while
        // keeping alias-expansion and depth limits at their defaults.
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_documents: 100_000,
                max_nodes: 10_000_000,
                max_events: 40_000_000,
            },
        };
        serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|e| {
            // The error text carries a source snippet after its first line.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            ProblemKind::Yaml(first.trim_start_matches("error: ").to_string())
        })?
    };
    let mut docs = Vec::new();
    for doc in raw {
        match doc {
            Value::Null => {}
            Value::Object(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = map.remove("items") {
                    docs.extend(items);
                }
            }
            doc => docs.push(doc),
        }
    }
    Ok(docs)
}

/// `Kind ns/name` of a document that may not decode, for messages.
fn describe(doc: &Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE);
    Some(format!("{kind} {ns}/{name}"))
}

/// The fields a resource may have at its root; `status` (written by a
/// Kubernetes API server) is accepted and ignored.
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Decodes one resource from a JSON value in the user's shape (as stored
/// by the control plane, or one document of a YAML stream).
pub fn parse_json_resource(value: &Value) -> Result<Resource, ProblemKind> {
    let map = value.as_object().ok_or(ProblemKind::NotAMapping)?;
    let kind_str = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ProblemKind::MissingField("kind"))?;
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ProblemKind::MissingField("apiVersion"))?;
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    if !(group.ends_with("istio.io") || group.ends_with("mesh.dev")) {
        return Err(ProblemKind::Foreign {
            api_version: api_version.to_string(),
            kind: kind_str.to_string(),
        });
    }
    // `kind:` must be the exact kind name; the loose forms are for the CLI.
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind_str)
        .ok_or_else(|| ProblemKind::UnknownKind(kind_str.to_string()))?;
    if let Some(unknown) = map.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(ProblemKind::Decode(FieldError::new(
            unknown.clone(),
            format!(
                "unknown field `{unknown}`, expected one of {}",
                TOP_LEVEL_FIELDS.map(|f| format!("`{f}`")).join(", ")
            ),
        )));
    }
    if !kind.accepts_api_version(api_version) {
        return Err(ProblemKind::ApiVersion {
            kind,
            api_version: api_version.to_string(),
        });
    }
    Ok(match kind {
        Kind::VirtualService => Resource::VirtualService(decode(value)?),
        Kind::DestinationRule => Resource::DestinationRule(decode(value)?),
        Kind::ServiceEntry => Resource::ServiceEntry(decode(value)?),
        Kind::WorkloadEntry => Resource::WorkloadEntry(decode(value)?),
        Kind::Gateway => Resource::Gateway(decode(value)?),
        Kind::Sidecar => Resource::Sidecar(decode(value)?),
        Kind::PeerAuthentication => Resource::PeerAuthentication(decode(value)?),
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(decode(value)?),
        Kind::RequestAuthentication => Resource::RequestAuthentication(decode(value)?),
        Kind::RateLimitPolicy => Resource::RateLimitPolicy(decode(value)?),
    })
}

/// Decodes an object, reporting the path of the offending field.
fn decode<S: DeserializeOwned + Default>(value: &Value) -> Result<Object<S>, ProblemKind> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ProblemKind::Decode(FieldError::new(path, e.into_inner().to_string()))
    })
}
