//! Debug and monitoring endpoints: `/debug/syncz`, `/debug/configz`,
//! `/debug/registryz`, `/debug/config_dump?proxyID=`, `/debug/ca`,
//! `/metrics`, `/healthz/ready`.

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
        "/debug/config_dump" => config_dump(req.uri().query(), shared),
        "/debug/ca" => crate::ca_info::handle(shared),
        p => error(
            StatusCode::NOT_FOUND,
            format!(
                "no debug endpoint {p}; try /debug/syncz, /debug/configz, /debug/registryz, /debug/config_dump?proxyID=, /debug/ca or /metrics"
            ),
        ),
    }
}

/// `/debug/config_dump?proxyID=<name>`: the Envoy `ConfigDump` meshd
/// generates for a connected proxy; 404 names the connected ones.
fn config_dump(query: Option<&str>, shared: &Shared) -> Response<Body> {
    let Some(asked) = query_param(query, "proxyID") else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing ?proxyID=<pod.namespace or node id>; `meshctl proxy-status` lists them".into(),
        );
    };
    let snapshot = shared.builder.current();
    match crate::config_dump::dump_json(&shared.status.list(), &asked, &snapshot) {
        Ok(dump) => json(StatusCode::OK, &dump),
        Err(e @ crate::config_dump::DumpError::UnknownProxy { .. }) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => {
            tracing::error!(proxy = %asked, error = %crate::config_dump::error_chain(&e), "config dump failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::config_dump::error_chain(&e),
            )
        }
    }
}

/// The percent-decoded value of `key` in a query string.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    // Two hex digits make a byte below 256.
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param(Some("a=1&proxyID=sidecar~10.0.0.1~r%2D1.ns~x"), "proxyID").as_deref(),
            Some("sidecar~10.0.0.1~r-1.ns~x")
        );
        assert_eq!(query_param(Some("proxyID="), "proxyID"), None);
        assert_eq!(percent_decode("50%"), "50%");
    }
}
