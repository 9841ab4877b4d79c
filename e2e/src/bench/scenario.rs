//! The proxy pairs under test and how each is started: command lines and
//! configuration files (pure, tested) and the processes.
//!
//! CPU placement ([`Placement`]): by default the client-side proxy on CPU
//! 0, the server-side proxy on CPU 1, one worker each; the backend and the
//! load generators float (on a 2-core machine they share those cores, the
//! same way for every pair). On a larger machine `--load-cpus` keeps them
//! off the proxies' cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::BenchError;
use super::procs::Proc;

/// Where the processes of a run are pinned: CPU lists as `taskset -c`
/// takes them (`0`, `2,3`, `2-3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The client-side proxy of every pair.
    pub client: String,
    /// The server-side proxy of every pair.
    pub server: String,
    /// The backend and the load generators (oha, wrk); None: they float.
    pub load: Option<String>,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            client: "0".into(),
            server: "1".into(),
            load: None,
        }
    }
}

/// Checks a CPU list (`0`, `0,2`, `2-3`, `0,2-3`) and returns it as given.
pub fn cpu_list(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-').map(|n| n.parse::<u16>());
            match (ends.next(), ends.next()) {
                (Some(Ok(_)), None) => true,
                (Some(Ok(a)), Some(Ok(b))) => a <= b,
                _ => false,
            }
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a CPU list (numbers and ranges, comma separated: 0,2-3)"
        ))
    }
}

/// Node id of a side of a pair (`ours-client`, `envoy-server`, ...).
pub fn node_id(pair: &str, side: &str) -> String {
    format!("{pair}-{side}")
}

/// mesh-proxy's command line for one side.
pub fn mesh_proxy_args(
    xds: SocketAddr,
    node_id: &str,
    side: &str,
    cert_dir: &Path,
    ports: [u16; 5],
) -> Vec<String> {
    let [admin, health, prom, outbound, inbound] = ports;
    [
        "run",
        "--xds-address",
        &format!("http://{xds}"),
        "--xds-mode",
        "sotw",
        "--node-id",
        node_id,
        "--namespace",
        "bench",
        "--service-account",
        side,
        "--workload-name",
        side,
        "--interception-mode",
        "NONE",
        "--cert-dir",
        &cert_dir.display().to_string(),
        "--concurrency",
        "1",
        "--admin-port",
        &admin.to_string(),
        "--health-port",
        &health.to_string(),
        "--prometheus-port",
        &prom.to_string(),
        "--outbound-port",
        &outbound.to_string(),
        "--inbound-port",
        &inbound.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Envoy's bootstrap for one side: ADS (state of the world) to the static
/// server, the SVID as the static secrets `default` and `ROOTCA` (what
/// `meshctl bootstrap envoy --cert-dir` writes), admin on loopback.
pub fn envoy_bootstrap(xds: SocketAddr, node_id: &str, cert_dir: &Path, admin: u16) -> Value {
    let f = |name: &str| cert_dir.join(name).display().to_string();
    json!({
        "node": {"id": node_id, "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "5s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": xds.ip().to_string(), "port_value": xds.port()}}}
                }]}]}
            }],
            "secrets": [
                {"name": "default", "tls_certificate": {
                    "certificate_chain": {"filename": f("cert-chain.pem")},
                    "private_key": {"filename": f("key.pem")}
                }},
                {"name": "ROOTCA", "validation_context": {
                    "trusted_ca": {"filename": f("root-cert.pem")}
                }}
            ]
        }
    })
}

/// Envoy's command line (one worker, no hot restart so several run side by
/// side, warnings only: no access log, as Istio's default).
pub fn envoy_args(config: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        config.display().to_string(),
        "--concurrency".into(),
        "1".into(),
        "--disable-hot-restart".into(),
        "-l".into(),
        "warning".into(),
    ]
}

/// HAProxy's configuration for one side: `client` takes plain HTTP on
/// `listen` and originates mutual TLS to `upstream`; `server` terminates
/// mutual TLS on `listen` (client certificate required) and forwards plain
/// HTTP to `upstream`. One thread, keep-alive both ways.
pub fn haproxy_config(
    side: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
    certs: &Path,
) -> String {
    let crt = certs.join("combined.pem").display().to_string();
    let ca = certs.join("root-cert.pem").display().to_string();
    let (bind, server) = if side == "server" {
        (
            format!("bind {listen} ssl crt {crt} ca-file {ca} verify required"),
            format!("server s {upstream}"),
        )
    } else {
        (
            format!("bind {listen}"),
            format!("server s {upstream} ssl crt {crt} ca-file {ca} verify required"),
        )
    };
    format!(
        "global\n  nbthread 1\n  tune.ssl.default-dh-param 2048\n\n\
         defaults\n  mode http\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\n\
         frontend in\n  {bind}\n  default_backend out\n\n\
         backend out\n  {server}\n"
    )
}

/// A pair of proxies that is up and serving.
#[derive(Debug)]
pub struct Pair {
    /// Scenario name.
    pub name: String,
    /// Where the load goes.
    pub entry: SocketAddr,
    /// Client-side then server-side process.
    pub procs: Vec<Proc>,
}

impl Pair {
    /// The pids, client side first.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, text)
        .map_err(|e| BenchError::io(&format!("write {}", path.display()), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_numbers_and_ranges() {
        for ok in ["0", "1", "0,2", "2-3", "0,2-3", "12"] {
            assert_eq!(cpu_list(ok), Ok(ok.to_owned()));
        }
        for bad in ["", "a", "0,", "3-2", "1-", "-1", "0;1", "0 1"] {
            let err = cpu_list(bad).unwrap_err();
            assert!(err.contains("is not a CPU list"), "{bad}: {err}");
        }
    }

    #[test]
    fn envoy_bootstrap_points_at_ads_and_names_the_istio_secrets() {
        let b = envoy_bootstrap(
            "127.0.0.1:7000".parse().unwrap(),
            "envoy-client",
            Path::new("/c"),
            9901,
        );
        assert_eq!(b["node"]["id"], "envoy-client");
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let secrets = b["static_resources"]["secrets"].as_array().unwrap();
        assert_eq!(secrets[0]["name"], "default");
        assert_eq!(secrets[1]["name"], "ROOTCA");
        assert_eq!(
            secrets[0]["tls_certificate"]["private_key"]["filename"],
            "/c/key.pem"
        );
    }

    #[test]
    fn mesh_proxy_runs_one_worker_from_files_without_interception() {
        let args = mesh_proxy_args(
            "127.0.0.1:7000".parse().unwrap(),
            "ours-client",
            "client",
            Path::new("/c"),
            [1, 2, 3, 4, 5],
        )
        .join(" ");
        assert!(args.contains("--concurrency 1"), "{args}");
        assert!(args.contains("--cert-dir /c"));
        assert!(args.contains("--xds-mode sotw"));
        assert!(args.contains("--interception-mode NONE"));
    }

    #[test]
    fn haproxy_server_side_requires_client_certificates() {
        let l: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let u: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let s = haproxy_config("server", l, u, Path::new("/c"));
        assert!(s.contains(
            "bind 127.0.0.1:1 ssl crt /c/combined.pem ca-file /c/root-cert.pem verify required"
        ));
        assert!(s.contains("server s 127.0.0.1:2\n"));
        let c = haproxy_config("client", l, u, Path::new("/c"));
        assert!(c.contains("bind 127.0.0.1:1\n"));
        assert!(c.contains("server s 127.0.0.1:2 ssl crt"));
    }
}
