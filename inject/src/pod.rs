//! Injection of one pod (a `Pod` or the `template` of a workload).

use serde_json::{Map, Value, json};

use crate::config::{InjectConfig, annotations};
use crate::probes;
use crate::template::{self, PodFacts};

/// What injection did to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// The pod already carries the status annotation; nothing changed.
    AlreadyInjected,
    /// The pod opted out or cannot be injected; nothing changed.
    Skipped(String),
}

fn annotation<'a>(meta: &'a Value, key: &str) -> Option<&'a str> {
    meta.get("annotations")?.get(key)?.as_str()
}

fn label<'a>(meta: &'a Value, key: &str) -> Option<&'a str> {
    meta.get("labels")?.get(key)?.as_str()
}

fn object_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    // Just made sure it is an object.
    v[key].as_object_mut().unwrap_or_else(|| unreachable!())
}

fn array_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.get(key).is_some_and(Value::is_array) {
        v[key] = json!([]);
    }
    // Just made sure it is an array.
    v[key].as_array_mut().unwrap_or_else(|| unreachable!())
}

/// The app's own `prometheus.io/*` annotations as the JSON the proxy reads
/// from `MESH_PROMETHEUS_ANNOTATIONS` (`{"scrape":"true","port":"9090",
/// "path":"/metrics"}`), when the app asks to be scraped on a port of its
/// own: the proxy then serves its metrics merged with the app's on 15020
/// (Istio's metrics merging). `scrape: "false"` is respected (nothing moves).
fn app_prometheus(meta: &Value) -> Option<String> {
    let scrape = annotation(meta, "prometheus.io/scrape")?;
    let port = annotation(meta, "prometheus.io/port")?;
    if scrape != "true" || port == "15020" {
        return None;
    }
    let mut original = serde_json::Map::new();
    original.insert("scrape".into(), json!(scrape));
    original.insert("port".into(), json!(port));
    if let Some(path) = annotation(meta, "prometheus.io/path") {
        original.insert("path".into(), json!(path));
    }
    Some(Value::Object(original).to_string())
}

/// Injects the sidecar into `pod`, an object with `metadata` and `spec` (a
/// Pod, or a workload's pod template). `workload` names the owner for the
/// proxy's identity when the pod itself has no name yet. Errors name the
/// field that is wrong, relative to `pod`.
pub fn inject_pod(pod: &mut Value, workload: &str, cfg: &InjectConfig) -> Result<Outcome, String> {
    let meta = pod.get("metadata").cloned().unwrap_or_else(|| json!({}));
    for key in [annotations::ISTIO_INJECT, annotations::INJECT] {
        if annotation(&meta, key) == Some("false") || label(&meta, key) == Some("false") {
            return Ok(Outcome::Skipped(format!("{key}: \"false\"")));
        }
    }
    if annotation(&meta, annotations::STATUS).is_some() {
        return Ok(Outcome::AlreadyInjected);
    }
    let spec = pod
        .get_mut("spec")
        .filter(|s| s.is_object())
        .ok_or("spec: a pod needs a spec")?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::Skipped(
            "spec.hostNetwork: true (the node's network cannot be intercepted per pod)".into(),
        ));
    }
    let containers = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .filter(|c| !c.is_empty())
        .ok_or("spec.containers: a pod needs at least one container")?;
    if containers
        .iter()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(template::PROXY_NAME))
    {
        return Err(format!(
            "spec.containers: a container is already named {:?}; rename it or opt out with {}: \"false\"",
            template::PROXY_NAME,
            annotations::INJECT
        ));
    }
    let facts = PodFacts::read(&meta, containers, workload)?;
    let probers = probes::rewrite(containers)?;

    let native = match annotation(&meta, annotations::NATIVE_SIDECAR) {
        Some(v) => v == "true",
        None => cfg.native_sidecar,
    };
    let mut proxy = template::proxy_container(cfg, &facts, &probers);
    let app_metrics = app_prometheus(&meta);
    if let Some(original) = &app_metrics
        && let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut)
    {
        env.push(json!({ "name": "MESH_PROMETHEUS_ANNOTATIONS", "value": original }));
    }
    let init = template::init_container(cfg, &facts);
    let inits = array_at(spec, "initContainers");
    // Interception must be in place before any other init container talks to
    // the network, so mesh-init goes first.
    inits.insert(0, init);
    if native {
        proxy["restartPolicy"] = json!("Always");
        inits.insert(1, proxy);
    } else {
        array_at(spec, "containers").push(proxy);
    }
    array_at(spec, "volumes").extend(template::volumes(cfg));

    let status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "initContainers": if native { json!([template::INIT_NAME, template::PROXY_NAME]) } else { json!([template::INIT_NAME]) },
        "containers": if native { json!([]) } else { json!([template::PROXY_NAME]) },
        "volumes": template::VOLUME_NAMES,
        "nativeSidecar": native,
    });
    let meta = object_at(pod, "metadata");
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        ann.insert(
            annotations::STATUS.into(),
            Value::String(status.to_string()),
        );
        for (k, v) in [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "15020"),
            ("prometheus.io/path", "/stats/prometheus"),
        ] {
            // The app's own scrape settings moved to the proxy (merged on
            // 15020); otherwise a user's explicit value is kept.
            if app_metrics.is_some() {
                ann.insert(k.into(), Value::String(v.into()));
            } else {
                ann.entry(k).or_insert_with(|| Value::String(v.into()));
            }
        }
    }
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta.insert("labels".into(), json!({}));
    }
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        // Istio's label telling peers this workload speaks mesh mTLS.
        labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
    }
    Ok(Outcome::Injected)
}
