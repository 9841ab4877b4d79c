//! Rewriting the app's HTTP and TCP probes to go through the sidecar.
//!
//! With interception in place, the kubelet's probes would hit the inbound
//! capture port and, under STRICT mTLS, be refused. So each HTTP or TCP
//! probe is pointed at the sidecar's health port (15021) under
//! `/app-health/<container>/<kind>`, and the original is handed to the proxy
//! in `MESH_KUBE_APP_PROBERS`, which answers by probing the app over
//! loopback. gRPC and exec probes need no rewrite and are left alone.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Port of the sidecar's health server.
pub const HEALTH_PORT: u16 = 15021;

const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

fn resolve_port(container: &Value, port: &Value, field: &str) -> Result<Value, String> {
    match port {
        Value::Number(_) => Ok(port.clone()),
        Value::String(name) => container
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|p| p.get("containerPort").cloned())
            })
            .ok_or_else(|| {
                format!("{field}: named port {name:?} is not declared in the container's ports")
            }),
        _ => Err(format!("{field}: port must be a number or a port name")),
    }
}

/// Rewrites probes in place; returns the originals keyed by the health
/// path the proxy serves them under.
pub fn rewrite(containers: &mut [Value]) -> Result<BTreeMap<String, Value>, String> {
    let mut probers = BTreeMap::new();
    for (i, container) in containers.iter_mut().enumerate() {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("spec.containers[{i}].name: every container needs a name"))?
            .to_string();
        for (field, kind) in KINDS {
            let Some(probe) = container.get(field) else {
                continue;
            };
            let at = format!("spec.containers[{i}].{field}");
            let original = if let Some(http) = probe.get("httpGet") {
                let port = resolve_port(
                    container,
                    http.get("port").unwrap_or(&Value::Null),
                    &format!("{at}.httpGet.port"),
                )?;
                let mut http = http.clone();
                http["port"] = port;
                json!({ "httpGet": http, "timeoutSeconds": probe.get("timeoutSeconds").cloned().unwrap_or(json!(1)) })
            } else if let Some(tcp) = probe.get("tcpSocket") {
                let port = resolve_port(
                    container,
                    tcp.get("port").unwrap_or(&Value::Null),
                    &format!("{at}.tcpSocket.port"),
                )?;
                json!({ "tcpSocket": { "port": port }, "timeoutSeconds": probe.get("timeoutSeconds").cloned().unwrap_or(json!(1)) })
            } else {
                continue;
            };
            let path = format!("/app-health/{name}/{kind}");
            probers.insert(path.clone(), original);
            let probe = &mut container[field];
            if let Some(obj) = probe.as_object_mut() {
                obj.remove("tcpSocket");
                obj.insert(
                    "httpGet".into(),
                    json!({ "path": path, "port": HEALTH_PORT, "scheme": "HTTP" }),
                );
            }
        }
    }
    Ok(probers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_http_port_is_resolved_and_probe_points_at_the_sidecar() {
        let mut cs = vec![json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3}
        })];
        let probers = rewrite(&mut cs).unwrap();
        assert_eq!(
            cs[0]["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/app/readyz", "port": 15021, "scheme": "HTTP"})
        );
        assert_eq!(cs[0]["readinessProbe"]["periodSeconds"], 3);
        assert_eq!(probers["/app-health/app/readyz"]["httpGet"]["port"], 8080);
        assert_eq!(
            probers["/app-health/app/readyz"]["httpGet"]["path"],
            "/ready"
        );
    }

    #[test]
    fn unknown_named_port_is_an_error_naming_the_field() {
        let mut cs = vec![json!({"name": "app", "livenessProbe": {"tcpSocket": {"port": "grpc"}}})];
        let err = rewrite(&mut cs).unwrap_err();
        assert_eq!(
            err,
            "spec.containers[0].livenessProbe.tcpSocket.port: named port \"grpc\" is not declared in the container's ports"
        );
    }

    #[test]
    fn exec_and_grpc_probes_are_left_alone() {
        let before = json!({"name": "app", "livenessProbe": {"exec": {"command": ["true"]}}, "readinessProbe": {"grpc": {"port": 9090}}});
        let mut cs = vec![before.clone()];
        assert!(rewrite(&mut cs).unwrap().is_empty());
        assert_eq!(cs[0], before);
    }
}
