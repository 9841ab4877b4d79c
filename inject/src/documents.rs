//! Injection of whole YAML/JSON documents: finds the pod template of each
//! workload kind and leaves every other kind untouched.

use serde_json::Value;

use crate::config::InjectConfig;
use crate::pod::{Outcome, inject_pod};

/// Why a stream of documents could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The input is not YAML/JSON.
    #[error("{source_name}: not valid YAML or JSON: {message}")]
    Parse {
        /// File name or `-` for stdin.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// One document is a workload that cannot be injected as written.
    #[error("{0}")]
    Document(Box<DocumentProblem>),
    /// The injected documents could not be written back as YAML.
    #[error("writing YAML: {0}")]
    Serialize(String),
}

/// Where in a stream a workload cannot be injected, and why.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}#{index} {kind} {name}: {path}: {message}")]
pub struct DocumentProblem {
    /// File name or `-` for stdin.
    pub source_name: String,
    /// 1-based index of the document in the stream.
    pub index: usize,
    /// The document's kind.
    pub kind: String,
    /// The document's name.
    pub name: String,
    /// Field path of the problem, from the document's root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Where the pod template sits in each workload kind.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// Injects one parsed document in place. Returns what happened to each pod
/// template found (none for kinds without pods; several for a `List`).
pub fn inject_value(doc: &mut Value, cfg: &InjectConfig) -> Result<Vec<Outcome>, (String, String)> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" {
        let mut outcomes = Vec::new();
        for (i, item) in doc
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .enumerate()
        {
            outcomes
                .extend(inject_value(item, cfg).map_err(|(p, m)| (format!("items[{i}].{p}"), m))?);
        }
        return Ok(outcomes);
    }
    let Some(path) = template_path(&kind) else {
        return Ok(Vec::new());
    };
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("unnamed")
        .trim_end_matches('-')
        .to_string();
    let mut pod = &mut *doc;
    for (depth, key) in path.iter().enumerate() {
        pod = pod.get_mut(*key).filter(|v| v.is_object()).ok_or_else(|| {
            (
                path[..=depth].join("."),
                format!("a {kind} needs a pod template here"),
            )
        })?;
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{}.", path.join("."))
    };
    let outcome = inject_pod(pod, &name, cfg).map_err(|m| match m.split_once(": ") {
        Some((field, msg)) => (format!("{prefix}{field}"), msg.to_string()),
        None => (prefix.trim_end_matches('.').to_string(), m),
    })?;
    Ok(vec![outcome])
}

/// Injects every workload in a YAML (multi-document) or JSON stream and
/// returns the result as YAML, documents separated by `---`.
pub fn inject_documents(
    text: &str,
    source_name: &str,
    cfg: &InjectConfig,
) -> Result<String, InjectError> {
    let parse_err = |message: String| InjectError::Parse {
        source_name: source_name.to_string(),
        message,
    };
    let mut docs: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?]
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| parse_err(e.to_string()))?
    };
    docs.retain(|d| !d.is_null());
    for (i, doc) in docs.iter_mut().enumerate() {
        inject_value(doc, cfg).map_err(|(path, message)| {
            InjectError::Document(Box::new(DocumentProblem {
                source_name: source_name.to_string(),
                index: i + 1,
                kind: doc
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                name: doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                path,
                message,
            }))
        })?;
    }
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(
            &serde_saphyr::to_string(doc).map_err(|e| InjectError::Serialize(e.to_string()))?,
        );
    }
    Ok(out)
}
