//! The mutating webhook: sidecar injection of Pods at CREATE.

use mesh_inject::{InjectConfig, Outcome, inject_pod};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::review::{AdmissionResponse, Review, ReviewError};

/// Answers an `AdmissionReview` for `/inject` with the response document.
///
/// - Only a Pod CREATE (no sub-resource) is injected; anything else is
///   admitted unchanged.
/// - A pod that opts out (`sidecar.istio.io/inject: "false"`), is already
///   injected, or uses the host network is admitted unchanged.
/// - An injected pod is admitted with a JSON Patch from the pod as sent to
///   the pod [`mesh_inject::inject_pod`] makes (the code `meshctl inject`
///   uses).
/// - A pod injection fails on (e.g. a bad `containerPort`) is denied with
///   the message naming the field, as Istio does: a pod that should be in
///   the mesh must not silently start without its proxy.
///
/// Errors are reviews that cannot be answered (HTTP 400).
pub fn review_inject(review: &Value, cfg: &InjectConfig) -> Result<Value, ReviewError> {
    let review = Review::from_value(review)?;
    let response = respond(&review, cfg)?;
    Ok(review.respond(response))
}

fn respond(review: &Review, cfg: &InjectConfig) -> Result<AdmissionResponse, ReviewError> {
    let req = &review.request;
    let uid = req.uid.as_str();
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != "CREATE" || req.sub_resource.is_some() {
        debug!(uid, kind = %req.kind.kind, operation = %req.operation, "not a pod creation; admitted unchanged");
        return Ok(AdmissionResponse::allow(uid));
    }
    let original = req
        .object
        .as_ref()
        .ok_or_else(|| ReviewError::MissingObject(req.operation.clone()))?;
    // A pod from a controller has no name yet; the request names the
    // namespace when the object does not.
    let namespace = original
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(req.namespace.as_deref())
        .unwrap_or("default");
    let workload = workload_name(original);
    let mut pod = original.clone();
    match inject_pod(&mut pod, &workload, cfg) {
        Ok(Outcome::Injected) => {
            let patch = json_patch::diff(original, &pod);
            info!(uid, namespace, workload = %workload, ops = patch.0.len(), dry_run = req.dry_run.unwrap_or(false), "sidecar injected");
            Ok(AdmissionResponse::allow_with_patch(uid, &patch))
        }
        Ok(Outcome::AlreadyInjected) => {
            debug!(uid, namespace, workload = %workload, "already injected");
            Ok(AdmissionResponse::allow(uid))
        }
        Ok(Outcome::Skipped(why)) => {
            debug!(uid, namespace, workload = %workload, reason = %why, "injection skipped");
            Ok(AdmissionResponse::allow(uid))
        }
        Err(message) => {
            warn!(uid, namespace, workload = %workload, error = %message, "injection failed; pod denied");
            Ok(AdmissionResponse::deny(
                uid,
                400,
                "BadRequest",
                format!("sidecar injection of pod {namespace}/{workload} failed: {message}"),
            ))
        }
    }
}

/// The name of the workload a pod belongs to, as Istio derives it: the
/// controlling owner's name, with a ReplicaSet's `-<pod-template-hash>`
/// removed (its Deployment) and a Job's `-<schedule time>` removed (its
/// CronJob); else the pod's name; else its `generateName` without the
/// trailing dash.
pub fn workload_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    let str_at = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let owners = meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .or(owners.first());
    if let Some((kind, name)) = owner.and_then(|o| {
        Some((
            o.get("kind")?.as_str()?,
            o.get("name")?.as_str().filter(|n| !n.is_empty())?,
        ))
    }) {
        let hash = meta
            .and_then(|m| m.pointer("/labels/pod-template-hash"))
            .and_then(Value::as_str);
        return match (kind, name.rsplit_once('-')) {
            ("ReplicaSet", Some((deployment, suffix)))
                if !deployment.is_empty() && hash.is_none_or(|h| h == suffix) =>
            {
                deployment.to_string()
            }
            ("Job", Some((cronjob, suffix)))
                if !cronjob.is_empty()
                    && !suffix.is_empty()
                    && suffix.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cronjob.to_string()
            }
            _ => name.to_string(),
        };
    }
    if let Some(name) = str_at("name").filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    str_at("generateName")
        .map(|g| g.trim_end_matches('-'))
        .filter(|g| !g.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replicaset_owner_names_its_deployment() {
        let pod = json!({"metadata": {
            "generateName": "reviews-v1-7d9f8c6b5-",
            "labels": {"pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "reviews-v1-7d9f8c6b5", "controller": true}],
        }});
        assert_eq!(workload_name(&pod), "reviews-v1");
    }

    #[test]
    fn replicaset_without_template_hash_suffix_keeps_its_name() {
        let pod = json!({"metadata": {
            "labels": {"pod-template-hash": "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "plain-rs", "controller": true}],
        }});
        assert_eq!(workload_name(&pod), "plain-rs");
    }

    #[test]
    fn cronjob_job_names_its_cronjob() {
        let pod = json!({"metadata": {
            "ownerReferences": [{"kind": "Job", "name": "backup-28912345", "controller": true}],
        }});
        assert_eq!(workload_name(&pod), "backup");
    }

    #[test]
    fn statefulset_owner_is_the_workload() {
        let pod = json!({"metadata": {
            "name": "db-0",
            "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}],
        }});
        assert_eq!(workload_name(&pod), "db");
    }

    #[test]
    fn bare_pod_uses_name_then_generate_name() {
        assert_eq!(workload_name(&json!({"metadata": {"name": "p"}})), "p");
        assert_eq!(
            workload_name(&json!({"metadata": {"generateName": "job-"}})),
            "job"
        );
        assert_eq!(workload_name(&json!({})), "unknown");
    }
}
