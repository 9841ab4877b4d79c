//! The webhooks answering real `AdmissionReview` documents over HTTPS.

mod support;

use base64::Engine as _;
use http::StatusCode;
use mesh_inject::{InjectConfig, Outcome};
use serde_json::{Value, json};
use support::{Proto, Server, UnsizedBody, fixture};

/// Decodes the response's base64 JSON Patch.
fn decode_patch(response: &Value) -> anyhow::Result<json_patch::Patch> {
    anyhow::ensure!(
        response["patchType"] == "JSONPatch",
        "no JSONPatch: {response}"
    );
    let b64 = response["patch"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no patch"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[tokio::test]
async fn replicaset_pod_is_injected_with_a_patch_equal_to_meshctl_inject() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("pod-create-replicaset.json")?;
    let response = server.review("/inject", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");

    let patch = decode_patch(&response)?;
    let mut patched = review["request"]["object"].clone();
    json_patch::patch(&mut patched, &patch)?;

    let mut expected = review["request"]["object"].clone();
    let outcome = mesh_inject::inject_pod(&mut expected, "reviews-v1", &InjectConfig::default())
        .map_err(anyhow::Error::msg)?;
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(patched, expected);
    // The workload is the Deployment (ReplicaSet name minus the hash).
    let proxy = patched["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "mesh-proxy"))
        .ok_or_else(|| anyhow::anyhow!("no mesh-proxy container: {patched}"))?;
    let workload_env = proxy["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "WORKLOAD_NAME"))
        .ok_or_else(|| anyhow::anyhow!("no WORKLOAD_NAME: {proxy}"))?;
    assert_eq!(workload_env["value"], "reviews-v1");
    server.stop().await
}

#[tokio::test]
async fn injection_works_over_http2() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("pod-create-replicaset.json")?;
    let (status, body) = server
        .request(
            Proto::Http2,
            "POST",
            "/inject",
            serde_json::to_vec(&review)?,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body)?;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    server.stop().await
}

#[tokio::test]
async fn opted_out_pod_is_admitted_without_a_patch() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("pod-create-opt-out.json")?;
    let response = server.review("/inject", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("patchType").is_none(), "{response}");
    server.stop().await
}

#[tokio::test]
async fn already_injected_pod_is_admitted_without_a_patch() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut review = fixture("pod-create-replicaset.json")?;
    let mut pod = review["request"]["object"].clone();
    mesh_inject::inject_pod(&mut pod, "reviews-v1", &InjectConfig::default())
        .map_err(anyhow::Error::msg)?;
    review["request"]["object"] = pod;
    let response = server.review("/inject", &review).await?;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await
}

#[tokio::test]
async fn pod_that_cannot_be_injected_is_denied_naming_the_field() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut review = fixture("pod-create-replicaset.json")?;
    review["request"]["object"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(0);
    let response = server.review("/inject", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("bookinfo/reviews-v1")
            && message.contains(
                "spec.containers[0].ports[0].containerPort: must be a port number 1-65535"
            ),
        "{message}"
    );
    server.stop().await
}

#[tokio::test]
async fn pod_update_is_not_injected() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut review = fixture("pod-create-replicaset.json")?;
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    let response = server.review("/inject", &review).await?;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await
}

#[tokio::test]
async fn virtual_service_with_bad_weights_is_denied_with_the_field_path() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("virtualservice-bad-weight.json")?;
    let response = server.review("/validate", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["reason"], "Invalid");
    let message = response["status"]["message"].as_str().unwrap_or_default();

    // Exactly the model's problems, as meshctl analyze and meshd print them.
    let resource = mesh_model::parse_json_resource(&review["request"]["object"])?;
    let errors = resource.validate();
    assert!(!errors.is_empty());
    let expected = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(
        message,
        format!("VirtualService bookinfo/reviews: {expected}")
    );
    assert!(
        message.contains("spec.http[0].route[0].weight: "),
        "{message}"
    );
    server.stop().await
}

#[tokio::test]
async fn valid_destination_rule_update_is_admitted() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("destinationrule-valid.json")?;
    let response = server.review("/validate", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none());
    server.stop().await
}

#[tokio::test]
async fn delete_is_always_admitted() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let review = fixture("virtualservice-delete.json")?;
    let response = server.review("/validate", &review).await?;
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    server.stop().await
}

#[tokio::test]
async fn undecodable_field_is_denied_with_its_path() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut review = fixture("destinationrule-valid.json")?;
    review["request"]["object"]["spec"]["subsets"][0]["labels"] = json!("v1");
    let response = server.review("/validate", &review).await?;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("DestinationRule bookinfo/reviews: spec.subsets[0].labels: "),
        "{message}"
    );
    server.stop().await
}

#[tokio::test]
async fn unknown_kind_of_a_mesh_group_is_admitted_with_a_warning() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut review = fixture("virtualservice-bad-weight.json")?;
    review["request"]["kind"]["kind"] = json!("EnvoyFilter");
    review["request"]["object"]["kind"] = json!("EnvoyFilter");
    let response = server.review("/validate", &review).await?;
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("EnvoyFilter"),
        "{response}"
    );
    server.stop().await
}

#[tokio::test]
async fn garbage_body_is_a_400() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for path in ["/inject", "/validate"] {
        let (status, body) = server
            .request(Proto::Http1, "POST", path, b"not json{".to_vec())
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("not JSON"));
    }
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let (status, body) = server
        .request(
            Proto::Http1,
            "POST",
            "/validate",
            serde_json::to_vec(&no_request)?,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("no request"));
    let mut no_uid = fixture("virtualservice-bad-weight.json")?;
    if let Some(req) = no_uid["request"].as_object_mut() {
        req.remove("uid");
    }
    let (status, body) = server
        .request(
            Proto::Http1,
            "POST",
            "/inject",
            serde_json::to_vec(&no_uid)?,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("uid"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    server.stop().await
}

#[tokio::test]
async fn oversized_body_is_a_413() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for proto in [Proto::Http1, Proto::Http2] {
        let body = vec![b' '; mesh_webhook::MAX_BODY_BYTES + 1];
        let (status, _) = server.request(proto, "POST", "/validate", body).await?;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}");
    }
    server.stop().await
}

#[tokio::test]
async fn oversized_body_without_a_length_is_a_413() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for proto in [Proto::Http1, Proto::Http2] {
        let body = UnsizedBody { chunks: 9 };
        let (status, _) = server.request_with(proto, "POST", "/inject", body).await?;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}");
    }
    server.stop().await
}

#[tokio::test]
async fn unknown_path_is_a_404_and_healthz_answers() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (status, _) = server
        .request(Proto::Http1, "POST", "/mutate", b"{}".to_vec())
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .request(Proto::Http1, "GET", "/inject", Vec::new())
        .await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = server
        .request(Proto::Http1, "GET", "/healthz", Vec::new())
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok\n");
    server.stop().await
}

#[tokio::test]
async fn decisions_are_counted_under_istio_metric_names() -> anyhow::Result<()> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = mesh_webhook::WebhookMetrics::register(&mut registry);
    let server = Server::start_with(mesh_webhook::WebhookState {
        inject: InjectConfig::default(),
        metrics,
    })
    .await?;
    server
        .review("/inject", &fixture("pod-create-replicaset.json")?)
        .await?;
    server
        .review("/inject", &fixture("pod-create-opt-out.json")?)
        .await?;
    server
        .review("/validate", &fixture("virtualservice-bad-weight.json")?)
        .await?;
    server
        .review("/validate", &fixture("destinationrule-valid.json")?)
        .await?;
    server
        .request(Proto::Http1, "POST", "/inject", b"{".to_vec())
        .await?;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    for line in [
        "sidecar_injection_requests_total 3",
        "sidecar_injection_success_total 1",
        "sidecar_injection_skip_total 1",
        "sidecar_injection_failure_total{type=\"review\"} 1",
        "galley_validation_passed_total{group=\"networking.istio.io\",version=\"v1\",resource=\"destinationrules\"} 1",
        "galley_validation_failed_total{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"Invalid\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    server.stop().await
}
