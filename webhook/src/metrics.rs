//! Counters of the webhooks' decisions, under Istio's names
//! (`sidecar_injection_*`, `galley_validation_*`) so existing dashboards
//! work. prometheus-client adds `_total` to every counter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;

/// Labels of a validation decision: what was reviewed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    /// API group, e.g. `networking.istio.io`.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Resource, e.g. `virtualservices`.
    pub resource: String,
}

/// Labels of a failed validation: what was reviewed and why it was denied.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationFailedLabels {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource.
    pub resource: String,
    /// The denial's `status.reason` (e.g. `Invalid`).
    pub reason: String,
}

/// Labels of a failed injection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InjectionFailedLabels {
    /// `inject` (the pod cannot be injected) or `review` (malformed review).
    pub r#type: String,
}

/// The webhooks' counters. Cloning shares the counters. The default is a
/// set that counts but is exported nowhere; [`WebhookMetrics::register`]
/// puts them in a registry.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// Injection reviews received.
    pub injection_requests: Counter,
    /// Pods injected (answered with a patch).
    pub injection_success: Counter,
    /// Reviews admitted without injection (opt-out, already injected, not a
    /// pod creation).
    pub injection_skip: Counter,
    /// Injections that failed, by type.
    pub injection_failure: Family<InjectionFailedLabels, Counter>,
    /// Resources admitted by validation.
    pub validation_passed: Family<ValidationLabels, Counter>,
    /// Resources denied by validation.
    pub validation_failed: Family<ValidationFailedLabels, Counter>,
    /// Validation reviews that could not be read (HTTP 400).
    pub validation_http_error: Counter,
}

impl WebhookMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> WebhookMetrics {
        let m = WebhookMetrics::default();
        registry.register(
            "sidecar_injection_requests",
            "Sidecar injection reviews received",
            m.injection_requests.clone(),
        );
        registry.register(
            "sidecar_injection_success",
            "Pods injected with the sidecar",
            m.injection_success.clone(),
        );
        registry.register(
            "sidecar_injection_skip",
            "Injection reviews admitted without injection",
            m.injection_skip.clone(),
        );
        registry.register(
            "sidecar_injection_failure",
            "Injection reviews that failed, by type",
            m.injection_failure.clone(),
        );
        registry.register(
            "galley_validation_passed",
            "Resources admitted by validation",
            m.validation_passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Resources denied by validation",
            m.validation_failed.clone(),
        );
        registry.register(
            "galley_validation_http_error",
            "Validation reviews that could not be read",
            m.validation_http_error.clone(),
        );
        m
    }

    /// Counts an injection answer (`Ok`: the response document) .
    pub(crate) fn count_injection<E>(&self, answer: &Result<Value, E>) {
        self.injection_requests.inc();
        let failure = |t: &str| {
            self.injection_failure
                .get_or_create(&InjectionFailedLabels { r#type: t.into() })
                .inc();
        };
        match answer {
            Err(_) => failure("review"),
            Ok(doc) if doc["response"]["allowed"] != true => failure("inject"),
            Ok(doc) if doc["response"].get("patch").is_some() => {
                self.injection_success.inc();
            }
            Ok(_) => {
                self.injection_skip.inc();
            }
        }
    }

    /// Counts a validation answer for `review`.
    pub(crate) fn count_validation<E>(&self, review: &Value, answer: &Result<Value, E>) {
        let doc = match answer {
            Ok(doc) => doc,
            Err(_) => {
                self.validation_http_error.inc();
                return;
            }
        };
        let field = |a: &str, b: &str| {
            review["request"][a][b]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let (group, version, resource) = (
            field("resource", "group"),
            field("resource", "version"),
            field("resource", "resource"),
        );
        if doc["response"]["allowed"] == true {
            self.validation_passed
                .get_or_create(&ValidationLabels {
                    group,
                    version,
                    resource,
                })
                .inc();
        } else {
            let reason = doc["response"]["status"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.validation_failed
                .get_or_create(&ValidationFailedLabels {
                    group,
                    version,
                    resource,
                    reason,
                })
                .inc();
        }
    }
}
