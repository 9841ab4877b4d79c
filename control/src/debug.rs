//! Debug and monitoring endpoints: `/debug/syncz`, `/debug/configz`,
//! `/debug/registryz`, `/metrics`, `/healthz/ready`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{Body, error, json, text};
use crate::state::Shared;

/// Handles one debug request.
pub async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    match req.uri().path() {
        "/healthz/ready" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        "/debug/syncz" => {
            let snapshot = shared.builder.current();
            let proxies: Vec<serde_json::Value> = shared
                .status
                .list()
                .into_iter()
                .map(|p| {
                    let states: serde_json::Map<String, serde_json::Value> =
                        ["CDS", "LDS", "EDS", "RDS"]
                            .iter()
                            .map(|t| {
                                let s = p.types.get(*t).map(|s| s.state()).unwrap_or("NOT SENT");
                                (t.to_string(), s.into())
                            })
                            .collect();
                    let mut v = serde_json::to_value(&p).unwrap_or_default();
                    v["states"] = states.into();
                    v
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "control_plane": format!("meshd {}", env!("CARGO_PKG_VERSION")),
                    "snapshot_version": snapshot.version,
                    "proxies": proxies,
                }),
            )
        }
        "/debug/configz" => {
            let snapshot = shared.builder.current();
            let items: Vec<_> = snapshot.config.iter().map(|r| r.to_json_value()).collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "snapshot_version": snapshot.version,
                    "resource_version": snapshot.resource_version,
                    "store": shared.store.describe(),
                    "errors": snapshot.errors,
                    "items": items,
                }),
            )
        }
        "/debug/registryz" => {
            let snapshot = shared.builder.current();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "snapshot_version": snapshot.version,
                    "services": snapshot.services,
                    "workloads": shared.workloads.list(),
                }),
            )
        }
        p => error(
            StatusCode::NOT_FOUND,
            format!(
                "no debug endpoint {p}; try /debug/syncz, /debug/configz, /debug/registryz or /metrics"
            ),
        ),
    }
}
