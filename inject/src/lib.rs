//! Sidecar injection for Kubernetes workloads.
//!
//! `meshctl inject` and meshd's mutating webhook both call [`inject_pod`] (or
//! [`inject_documents`] for YAML streams), so what a user previews locally is
//! exactly what the cluster does. The input is untyped JSON (`serde_json::Value`)
//! so that any field the mesh does not know about passes through untouched.
//!
//! What injection adds to a pod template:
//! - an init container `mesh-init` running `mesh-proxy init` with the pod's
//!   port settings (skipped in favour of nothing when the CNI handles
//!   interception is a later feature), or the proxy as a native sidecar
//!   (an init container with `restartPolicy: Always`) when asked;
//! - the `mesh-proxy` container (uid 1337, read-only root filesystem,
//!   readiness on 15021, preStop drain);
//! - volumes: the projected service-account token (audience of the CA), the
//!   root certificate, pod labels/annotations through the downward API, and
//!   a memory-backed scratch directory;
//! - HTTP and TCP probes of the app rewritten to go through the sidecar's
//!   health port, the originals kept in `MESH_KUBE_APP_PROBERS`;
//! - annotations recording what was injected (`sidecar.mesh.dev/status`).
//!
//! Injection is idempotent (a pod carrying the status annotation is left
//! alone) and honours the opt-out annotations `sidecar.istio.io/inject` and
//! `sidecar.mesh.dev/inject` set to `"false"`.

mod config;
mod documents;
mod pod;
mod probes;
mod template;

pub use config::{InjectConfig, annotations};
pub use documents::{DocumentProblem, InjectError, inject_documents, inject_value};
pub use pod::{Outcome, inject_pod};
