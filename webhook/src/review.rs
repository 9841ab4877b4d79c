//! The `admission.k8s.io/v1` `AdmissionReview` wire shape: reading a request
//! and writing a response.
//!
//! Own serde types rather than `kube::core::admission`: that needs kube's
//! `admission` feature, which would change the feature set (and rebuild) of
//! the shared kube dependency of every crate, and this crate needs no
//! Kubernetes client. Only the fields the webhooks read are declared; the
//! rest of the request (`userInfo`, `options`, ...) is ignored.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API versions of `AdmissionReview` understood here (same shape); the
/// response echoes the request's.
pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Why a body is not an `AdmissionReview` the webhooks can answer. The
/// server answers these with HTTP 400 and the message.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `apiVersion`/`kind` are not those of an `AdmissionReview`.
    #[error(
        "expected kind AdmissionReview with apiVersion admission.k8s.io/v1, got kind {kind:?} apiVersion {api_version:?}"
    )]
    NotAReview {
        /// The `kind` as sent (empty when absent).
        kind: String,
        /// The `apiVersion` as sent (empty when absent).
        api_version: String,
    },
    /// There is no `request` object.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// `request` does not have the shape of an `AdmissionRequest` (e.g. no
    /// `uid`, or `operation` not a string).
    #[error("the AdmissionReview's request is malformed: {0}")]
    BadRequest(#[source] serde_json::Error),
    /// `request.uid` is empty.
    #[error("the AdmissionReview's request.uid is empty")]
    EmptyUid,
    /// A CREATE or UPDATE carries no `object`.
    #[error("the AdmissionReview's request has no object for operation {0}")]
    MissingObject(String),
}

/// Group, version and kind of the object under review (`request.kind`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind {
    /// API group; empty for the core group (Pods).
    #[serde(default)]
    pub group: String,
    /// API version, e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// Kind, e.g. `Pod`.
    #[serde(default)]
    pub kind: String,
}

/// Group, version and resource (plural) under review (`request.resource`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionResource {
    /// API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Resource, e.g. `pods`.
    #[serde(default)]
    pub resource: String,
}

/// The part of `AdmissionReview.request` the webhooks read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies this call; echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// The resource being admitted.
    #[serde(default)]
    pub resource: GroupVersionResource,
    /// Sub-resource (e.g. `status`), if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name; empty for a CREATE with `generateName`.
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace of the request (the object may not carry one).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// The new object (CREATE, UPDATE).
    #[serde(default)]
    pub object: Option<Value>,
    /// The previous object (UPDATE, DELETE).
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Whether the API server will not persist the result.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The `status` of a denial, as Kubernetes' `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// HTTP-like status code shown to the client (e.g. 422).
    pub code: u16,
    /// What was wrong, shown by kubectl after "denied the request:".
    pub message: String,
    /// Machine-readable reason, e.g. `Invalid`.
    pub reason: String,
}

/// `AdmissionReview.response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why it is denied (absent when allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 of the RFC 6902 JSON Patch to apply to the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Warnings kubectl prints to the user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// Admits the request unchanged.
    pub fn allow(uid: &str) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Admits the request with `patch` applied to the object.
    pub fn allow_with_patch(uid: &str, patch: &json_patch::Patch) -> Self {
        // A Patch is a list of plain serde structs: serialising cannot fail.
        let bytes = serde_json::to_vec(patch).unwrap_or_default();
        AdmissionResponse {
            patch_type: Some("JSONPatch".into()),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ..AdmissionResponse::allow(uid)
        }
    }

    /// Denies the request with `message`; `code`/`reason` as in a
    /// Kubernetes `Status` (422 `Invalid`, 400 `BadRequest`).
    pub fn deny(uid: &str, code: u16, reason: &str, message: String) -> Self {
        AdmissionResponse {
            allowed: false,
            status: Some(Status {
                code,
                message,
                reason: reason.to_string(),
            }),
            ..AdmissionResponse::allow(uid)
        }
    }

    /// Adds a warning shown to the client.
    pub fn with_warning(mut self, warning: String) -> Self {
        self.warnings.push(warning);
        self
    }
}

/// A parsed review: the request and the `apiVersion` to answer with.
#[derive(Debug, Clone)]
pub struct Review {
    /// The review's `apiVersion`, echoed in the response.
    pub api_version: String,
    /// The request.
    pub request: AdmissionRequest,
}

impl Review {
    /// Reads an `AdmissionReview` document.
    pub fn from_value(review: &Value) -> Result<Review, ReviewError> {
        let field = |k: &str| review.get(k).and_then(Value::as_str).unwrap_or("");
        let (kind, api_version) = (field("kind"), field("apiVersion"));
        if kind != "AdmissionReview" || !API_VERSIONS.contains(&api_version) {
            return Err(ReviewError::NotAReview {
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            });
        }
        let request = review
            .get("request")
            .filter(|r| !r.is_null())
            .ok_or(ReviewError::MissingRequest)?;
        let request = AdmissionRequest::deserialize(request).map_err(ReviewError::BadRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::EmptyUid);
        }
        Ok(Review {
            api_version: api_version.to_string(),
            request,
        })
    }

    /// Reads an `AdmissionReview` from a request body.
    pub fn from_slice(body: &[u8]) -> Result<Review, ReviewError> {
        let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
        Review::from_value(&value)
    }

    /// The response document answering this review.
    pub fn respond(&self, response: AdmissionResponse) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": "AdmissionReview",
            "response": response,
        })
    }
}
