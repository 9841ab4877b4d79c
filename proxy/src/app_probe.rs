//! The app's own Kubernetes probes, served by the sidecar under
//! `/app-health/<container>/<kind>` on the health port. Injection rewrites
//! each `httpGet` / `tcpSocket` probe to that path and hands the original
//! over in `MESH_KUBE_APP_PROBERS` (inject/src/probes.rs): a JSON object
//! from path to `{"httpGet": {...}, "timeoutSeconds": n}` or
//! `{"tcpSocket": {"port": n}, "timeoutSeconds": n}`. The proxy probes the
//! app over loopback, outside the interception, as the kubelet would have.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;

/// Why `MESH_KUBE_APP_PROBERS` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbersError {
    /// Not the JSON injection writes.
    #[error("MESH_KUBE_APP_PROBERS is not the JSON injection writes")]
    Json(#[source] serde_json::Error),
    /// An entry has neither `httpGet` nor `tcpSocket`.
    #[error("MESH_KUBE_APP_PROBERS[{path:?}]: needs httpGet or tcpSocket")]
    Kind {
        /// The health path.
        path: String,
    },
    /// A port is not a number (injection resolves named ports).
    #[error("MESH_KUBE_APP_PROBERS[{path:?}]: port must be a number")]
    Port {
        /// The health path.
        path: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProber {
    http_get: Option<RawHttpGet>,
    tcp_socket: Option<RawTcp>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHttpGet {
    path: Option<String>,
    port: serde_json::Value,
    host: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<RawHeader>,
}

#[derive(Debug, Deserialize)]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct RawTcp {
    port: serde_json::Value,
    host: Option<String>,
}

/// How to probe one app endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prober {
    /// `httpGet`: healthy on a 2xx or 3xx status.
    Http {
        /// Host to connect to (default 127.0.0.1).
        host: String,
        /// Port.
        port: u16,
        /// Request path.
        path: String,
        /// Whether the app expects TLS (not supported: answered 503 with
        /// the reason).
        https: bool,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Probe timeout.
        timeout: Duration,
    },
    /// `tcpSocket`: healthy when a connection opens.
    Tcp {
        /// Host to connect to (default 127.0.0.1).
        host: String,
        /// Port.
        port: u16,
        /// Probe timeout.
        timeout: Duration,
    },
}

/// The probers by health path (`/app-health/app/readyz`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProbers(pub BTreeMap<String, Prober>);

fn port(path: &str, v: &serde_json::Value) -> Result<u16, ProbersError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ProbersError::Port { path: path.into() })
}

impl AppProbers {
    /// Parses `MESH_KUBE_APP_PROBERS`; empty text means no probers.
    pub fn parse(json: &str) -> Result<Self, ProbersError> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: BTreeMap<String, RawProber> =
            serde_json::from_str(json).map_err(ProbersError::Json)?;
        let mut out = BTreeMap::new();
        for (path, p) in raw {
            // The kubelet's default probe timeout is one second.
            let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1));
            let prober = match (p.http_get, p.tcp_socket) {
                (Some(h), _) => Prober::Http {
                    host: h.host.unwrap_or_else(|| "127.0.0.1".into()),
                    port: port(&path, &h.port)?,
                    path: h.path.unwrap_or_else(|| "/".into()),
                    https: h.scheme.is_some_and(|s| s.eq_ignore_ascii_case("https")),
                    headers: h
                        .http_headers
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                    timeout,
                },
                (None, Some(t)) => Prober::Tcp {
                    host: t.host.unwrap_or_else(|| "127.0.0.1".into()),
                    port: port(&path, &t.port)?,
                    timeout,
                },
                (None, None) => return Err(ProbersError::Kind { path }),
            };
            out.insert(path, prober);
        }
        Ok(Self(out))
    }
}

/// Probes the app; `Err` says why it is not healthy.
pub async fn probe(prober: &Prober) -> Result<(), String> {
    match prober {
        Prober::Tcp {
            host,
            port,
            timeout,
        } => match tokio::time::timeout(*timeout, TcpStream::connect((host.as_str(), *port))).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("tcp {host}:{port}: timed out after {timeout:?}")),
        },
        Prober::Http { https: true, .. } => {
            Err("HTTPS app probes are not supported by mesh-proxy yet".into())
        }
        Prober::Http {
            host,
            port,
            path,
            headers,
            timeout,
            ..
        } => {
            let status = crate::health::http_get(host, *port, path, headers, *timeout)
                .await
                .map(|(status, _)| status)?;
            if (200..400).contains(&status.as_u16()) {
                Ok(())
            } else {
                Err(format!("http {host}:{port}{path}: status {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_injection_writes() {
        let json = r#"{"/app-health/app/livez":{"tcpSocket":{"port":8080},"timeoutSeconds":3},
            "/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP",
            "httpHeaders":[{"name":"X-A","value":"b"}]},"timeoutSeconds":1}}"#;
        let p = AppProbers::parse(json).unwrap();
        assert_eq!(
            p.0["/app-health/app/livez"],
            Prober::Tcp {
                host: "127.0.0.1".into(),
                port: 8080,
                timeout: Duration::from_secs(3)
            }
        );
        let Prober::Http {
            path,
            headers,
            https,
            ..
        } = &p.0["/app-health/app/readyz"]
        else {
            panic!("http expected")
        };
        assert_eq!(path, "/ready");
        assert_eq!(headers, &[("X-A".to_owned(), "b".to_owned())]);
        assert!(!https);
        assert!(AppProbers::parse("").unwrap().0.is_empty());
    }

    #[test]
    fn refuses_entries_without_a_probe_or_with_a_named_port() {
        assert!(matches!(
            AppProbers::parse(r#"{"/app-health/a/livez":{"exec":{}}}"#),
            Err(ProbersError::Kind { .. })
        ));
        assert!(matches!(
            AppProbers::parse(r#"{"/app-health/a/livez":{"tcpSocket":{"port":"http"}}}"#),
            Err(ProbersError::Port { .. })
        ));
    }
}
