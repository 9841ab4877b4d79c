//! Injection behaviour beyond the golden files: errors name the document and
//! field, kinds without pods pass through, and JSON input works.

use mesh_inject::{InjectConfig, Outcome, inject_documents, inject_value};
use serde_json::json;

#[test]
fn pod_without_containers_is_an_error_naming_the_document_and_field() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers: []\n";
    let err = inject_documents(yaml, "web.yaml", &InjectConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web.yaml#2 Deployment web: spec.template.spec.containers: a pod needs at least one container"
    );
}

#[test]
fn deployment_without_template_is_an_error() {
    let yaml =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n";
    let err = inject_documents(yaml, "web.yaml", &InjectConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web.yaml#1 Deployment web: spec.template: a Deployment needs a pod template here"
    );
}

#[test]
fn container_already_named_like_the_proxy_is_refused() {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "mesh-proxy", "image": "x"}]}});
    let (path, msg) = inject_value(&mut pod, &InjectConfig::default()).unwrap_err();
    assert_eq!(path, "spec.containers");
    assert!(msg.contains("already named \"mesh-proxy\""), "{msg}");
}

#[test]
fn bad_yaml_is_a_parse_error_with_the_source() {
    let err = inject_documents("kind: [unclosed\n", "-", &InjectConfig::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("-: not valid YAML or JSON:"),
        "{err}"
    );
}

#[test]
fn json_list_input_injects_every_item() {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "a", "image": "x"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    ]});
    let mut doc = list.clone();
    let outcomes = inject_value(&mut doc, &InjectConfig::default()).unwrap();
    assert_eq!(outcomes, vec![Outcome::Injected]);
    assert_eq!(doc["items"][1], list["items"][1]);
    assert_eq!(
        doc["items"][0]["spec"]["containers"][1]["name"],
        "mesh-proxy"
    );
    let out = inject_documents(&list.to_string(), "list.json", &InjectConfig::default()).unwrap();
    assert!(out.contains("name: mesh-init"), "{out}");
}

#[test]
fn opted_out_pod_reports_why() {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"sidecar.mesh.dev/inject": "false"}}, "spec": {"containers": [{"name": "a"}]}});
    let before = pod.clone();
    let outcomes = inject_value(&mut pod, &InjectConfig::default()).unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Skipped(
            "sidecar.mesh.dev/inject: \"false\"".into()
        )]
    );
    assert_eq!(pod, before);
}

#[test]
fn config_settings_reach_the_proxy_container() {
    let cfg = InjectConfig {
        proxy_image: "registry.local/proxy:dev".into(),
        xds_address: "http://meshd.ops:15010".into(),
        proxy_uid: 4242,
        ..InjectConfig::default()
    };
    let mut pod =
        json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    inject_value(&mut pod, &cfg).unwrap();
    let proxy = &pod["spec"]["containers"][1];
    assert_eq!(proxy["image"], "registry.local/proxy:dev");
    assert_eq!(proxy["securityContext"]["runAsUser"], 4242);
    assert!(
        proxy["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "XDS_ADDRESS", "value": "http://meshd.ops:15010"}))
    );
    let init_args = pod["spec"]["initContainers"][0]["args"].as_array().unwrap();
    assert_eq!(init_args[1..3], [json!("--proxy-uid"), json!("4242")]);
}

fn proxy_env<'a>(pod: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "mesh-proxy")?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn app_scrape_annotations_move_to_the_proxy_for_merged_metrics() {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"
    }}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    inject_value(&mut pod, &InjectConfig::default()).unwrap();
    let original: serde_json::Value =
        serde_json::from_str(proxy_env(&pod, "MESH_PROMETHEUS_ANNOTATIONS").unwrap()).unwrap();
    assert_eq!(
        original,
        json!({"scrape": "true", "port": "9090", "path": "/metrics"})
    );
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], "15020");
    assert_eq!(ann["prometheus.io/path"], "/stats/prometheus");
    // Injecting again changes nothing (the app's settings are not lost to
    // the rewritten annotations).
    let before = pod.clone();
    assert_eq!(
        inject_value(&mut pod, &InjectConfig::default()).unwrap(),
        vec![Outcome::AlreadyInjected]
    );
    assert_eq!(pod, before);
}

#[test]
fn app_that_opts_out_of_scraping_keeps_its_annotations() {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {
        "prometheus.io/scrape": "false", "prometheus.io/port": "9090"
    }}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    inject_value(&mut pod, &InjectConfig::default()).unwrap();
    assert_eq!(proxy_env(&pod, "MESH_PROMETHEUS_ANNOTATIONS"), None);
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "false");
    assert_eq!(ann["prometheus.io/port"], "9090");
}
