//! The validating webhook: mesh resources decoded and validated by the model.

use mesh_model::kind::{NETWORKING_GROUP, POLICY_GROUP, SECURITY_GROUP};
use mesh_model::{ProblemKind, parse_json_resource};
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::review::{AdmissionResponse, Review, ReviewError};

/// The API groups whose resources are validated.
pub const MESH_GROUPS: [&str; 3] = [NETWORKING_GROUP, SECURITY_GROUP, POLICY_GROUP];

/// Answers an `AdmissionReview` for `/validate` with the response document.
///
/// - CREATE and UPDATE of a kind the model knows: the object is decoded and
///   validated; a problem denies the request (422 `Invalid`) with every
///   problem as `field.path: message`, the text `meshctl analyze` and meshd's
///   API print, after `Kind namespace/name: `.
/// - DELETE, CONNECT, other groups: admitted.
/// - A kind of a mesh group the model does not know (e.g. `EnvoyFilter`):
///   admitted with a warning that it is not validated.
///
/// Errors are reviews that cannot be answered (HTTP 400).
pub fn review_validate(review: &Value) -> Result<Value, ReviewError> {
    let review = Review::from_value(review)?;
    let response = respond(&review)?;
    Ok(review.respond(response))
}

fn respond(review: &Review) -> Result<AdmissionResponse, ReviewError> {
    let req = &review.request;
    let uid = req.uid.as_str();
    let checked_op = matches!(req.operation.as_str(), "CREATE" | "UPDATE");
    if !checked_op || !MESH_GROUPS.contains(&req.kind.group.as_str()) || req.sub_resource.is_some()
    {
        debug!(uid, group = %req.kind.group, kind = %req.kind.kind, operation = %req.operation, "not validated; admitted");
        return Ok(AdmissionResponse::allow(uid));
    }
    let mut object = req
        .object
        .clone()
        .ok_or_else(|| ReviewError::MissingObject(req.operation.clone()))?;
    // The model defaults a missing namespace to `default`; the request knows
    // the real one.
    if let (Some(ns), Some(meta)) = (
        req.namespace.as_deref().filter(|ns| !ns.is_empty()),
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.entry("namespace").or_insert_with(|| json!(ns));
    }
    let name = format!(
        "{} {}/{}",
        req.kind.kind,
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let problems: Vec<String> = match parse_json_resource(&object) {
        Ok(resource) => resource
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect(),
        Err(ProblemKind::Foreign { .. }) => return Ok(AdmissionResponse::allow(uid)),
        Err(ProblemKind::UnknownKind(kind)) => {
            return Ok(AdmissionResponse::allow(uid).with_warning(format!(
                "{kind} is not validated by the mesh (it does not implement this kind)"
            )));
        }
        Err(problem) => vec![problem.to_string()],
    };
    if problems.is_empty() {
        debug!(uid, resource = %name, operation = %req.operation, "valid");
        return Ok(AdmissionResponse::allow(uid));
    }
    info!(uid, resource = %name, operation = %req.operation, problems = problems.len(), "invalid resource denied");
    Ok(AdmissionResponse::deny(
        uid,
        422,
        "Invalid",
        format!("{name}: {}", problems.join("; ")),
    ))
}
