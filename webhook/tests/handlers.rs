//! The pure handlers on odd and malformed reviews (no HTTP).

mod support;

use mesh_inject::InjectConfig;
use mesh_webhook::{ReviewError, review_inject, review_validate};
use serde_json::{Value, json};
use support::fixture;

fn pod_review() -> anyhow::Result<Value> {
    fixture("pod-create-replicaset.json")
}

#[test]
fn v1beta1_review_is_answered_in_v1beta1() -> anyhow::Result<()> {
    let mut review = fixture("destinationrule-valid.json")?;
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let answer = review_validate(&review)?;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["allowed"], true);
    Ok(())
}

#[test]
fn other_documents_are_not_reviews() -> anyhow::Result<()> {
    let mut review = pod_review()?;
    review["kind"] = json!("Pod");
    let err = review_inject(&review, &InjectConfig::default()).err();
    assert!(
        matches!(err, Some(ReviewError::NotAReview { .. })),
        "{err:?}"
    );
    for doc in [json!(null), json!([]), json!("AdmissionReview"), json!(42)] {
        assert!(review_validate(&doc).is_err(), "{doc}");
        assert!(
            review_inject(&doc, &InjectConfig::default()).is_err(),
            "{doc}"
        );
    }
    Ok(())
}

#[test]
fn empty_uid_and_non_string_operation_are_malformed() -> anyhow::Result<()> {
    let mut review = pod_review()?;
    review["request"]["uid"] = json!("");
    let err = review_inject(&review, &InjectConfig::default()).err();
    assert!(matches!(err, Some(ReviewError::EmptyUid)), "{err:?}");
    let mut review = pod_review()?;
    review["request"]["operation"] = json!(1);
    let err = review_inject(&review, &InjectConfig::default()).err();
    assert!(matches!(err, Some(ReviewError::BadRequest(_))), "{err:?}");
    Ok(())
}

#[test]
fn create_without_object_is_malformed() -> anyhow::Result<()> {
    let mut review = pod_review()?;
    review["request"]["object"] = Value::Null;
    let err = review_inject(&review, &InjectConfig::default()).err();
    assert!(
        matches!(err, Some(ReviewError::MissingObject(_))),
        "{err:?}"
    );
    let mut review = fixture("virtualservice-bad-weight.json")?;
    review["request"]["object"] = Value::Null;
    let err = review_validate(&review).err();
    assert!(
        matches!(err, Some(ReviewError::MissingObject(_))),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn odd_pod_shapes_are_answered_without_panicking() -> anyhow::Result<()> {
    let odd = [
        json!("a string"),
        json!([1, 2]),
        json!({}),
        json!({"metadata": "x", "spec": {"containers": [{"name": "a"}]}}),
        json!({"metadata": {"annotations": "x", "ownerReferences": "y"}, "spec": {"containers": [{"name": "a", "ports": "p"}]}}),
        json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "-"}]}, "spec": {"containers": []}}),
        json!({"spec": {"containers": [{"name": "mesh-proxy"}]}}),
    ];
    for object in odd {
        let mut review = pod_review()?;
        review["request"]["object"] = object.clone();
        let answer = review_inject(&review, &InjectConfig::default())?;
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "{object}"
        );
        assert!(answer["response"]["allowed"].is_boolean(), "{object}");
    }
    Ok(())
}

#[test]
fn odd_mesh_objects_are_denied_or_admitted_without_panicking() -> anyhow::Result<()> {
    let odd = [
        json!("a string"),
        json!({}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": "x"}),
        json!({"apiVersion": "networking.istio.io/v9", "kind": "VirtualService", "metadata": {"name": "a"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}),
    ];
    for object in odd {
        let mut review = fixture("virtualservice-bad-weight.json")?;
        review["request"]["object"] = object.clone();
        let answer = review_validate(&review)?;
        assert!(answer["response"]["allowed"].is_boolean(), "{object}");
    }
    Ok(())
}

#[test]
fn namespace_comes_from_the_request_when_the_object_has_none() -> anyhow::Result<()> {
    let mut review = fixture("virtualservice-bad-weight.json")?;
    if let Some(meta) = review["request"]["object"]["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    let answer = review_validate(&review)?;
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("VirtualService bookinfo/reviews: "),
        "{message}"
    );
    Ok(())
}

#[test]
fn patch_escapes_slashes_in_annotation_keys() -> anyhow::Result<()> {
    use base64::Engine as _;
    let mut review = pod_review()?;
    review["request"]["object"]["metadata"]["annotations"] = json!({"example.com/owner": "team-a"});
    let answer = review_inject(&review, &InjectConfig::default())?;
    let b64 = answer["response"]["patch"].as_str().unwrap_or_default();
    let ops: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64)?)?;
    let paths: Vec<&str> = ops
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| op["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/sidecar.mesh.dev~1status"),
        "{paths:?}"
    );
    Ok(())
}
