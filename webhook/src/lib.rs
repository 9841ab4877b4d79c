//! The Kubernetes admission webhooks meshd serves on port 15017.
//!
//! - `POST /inject`: the mutating webhook. Pods created in namespaces
//!   labelled for injection get the sidecar, computed by the same code as
//!   `meshctl inject` ([`mesh_inject::inject_pod`]), returned as an RFC 6902
//!   JSON Patch ([`review_inject`]).
//! - `POST /validate`: the validating webhook. Mesh resources are decoded
//!   and validated by `mesh-model`; invalid ones are denied with every
//!   `field.path: message` problem ([`review_validate`]).
//! - `GET /healthz`: liveness.
//!
//! Decisions are counted under Istio's metric names ([`WebhookMetrics`]).
//!
//! The handlers are pure functions from an `AdmissionReview` JSON document
//! to the response document; [`serve`] puts them behind HTTPS (HTTP/1.1 and
//! HTTP/2) with a certificate the caller provides ([`tls::server_config`]).

pub mod inject;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;
pub mod validate;

pub use inject::{review_inject, workload_name};
pub use metrics::WebhookMetrics;
pub use review::{AdmissionRequest, AdmissionResponse, ReviewError, Status};
pub use server::{MAX_BODY_BYTES, WebhookState, serve};
pub use tls::{TlsError, server_config};
pub use validate::review_validate;
