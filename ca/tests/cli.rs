//! The `mesh-ca` binary end to end: init, token create, issue, bundle,
//! rotate-root, and serve answering a workload client.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mesh_ca::SpiffeId;
use mesh_ca::client::{CaClient, CaClientConfig, Credential};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-ca");
const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn mesh_ca(args: &[&str]) -> String {
    let (ok, out) = common::run(Command::new(BIN).args(args));
    assert!(ok, "mesh-ca {args:?}: {out}");
    out
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn init_issue_bundle_and_rotate_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("svid");
    mesh_ca(&[
        "init",
        "--trust-domain",
        "cluster.local",
        "--out",
        path(&ca),
        "--intermediate",
    ]);
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
        "trust-bundle.pem",
    ] {
        assert!(ca.join(f).exists(), "{f} written");
    }
    let again = Command::new(BIN)
        .args(["init", "--out", path(&ca)])
        .output()
        .unwrap();
    assert!(!again.status.success(), "init refuses to overwrite");

    mesh_ca(&[
        "issue",
        "--dir",
        path(&ca),
        "--spiffe-id",
        ID,
        "--out",
        path(&out),
        "--ttl",
        "1h",
    ]);
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let chain = read("cert-chain.pem");
    let (ok, msg) = common::openssl_verify(
        tmp.path(),
        &read("root-cert.pem"),
        &chain,
        &read("cert.pem"),
    );
    assert!(ok, "openssl verify: {msg}");

    let token = mesh_ca(&[
        "token",
        "create",
        "--dir",
        path(&ca),
        "--spiffe-id",
        ID,
        "--ttl",
        "10m",
    ]);
    assert_eq!(token.trim().split('.').count(), 2);

    let bundle = mesh_ca(&["bundle", "--dir", path(&ca), "--format", "spiffe"]);
    let v: serde_json::Value = serde_json::from_str(bundle.trim()).unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);

    mesh_ca(&["rotate-root", "--dir", path(&ca)]);
    let bundle = mesh_ca(&["bundle", "--dir", path(&ca), "--format", "spiffe"]);
    let v: serde_json::Value = serde_json::from_str(bundle.trim()).unwrap();
    assert_eq!(
        v["keys"].as_array().unwrap().len(),
        2,
        "old and new root during rotation"
    );
    mesh_ca(&["rotate-root", "--dir", path(&ca), "--activate"]);
    let again = Command::new(BIN)
        .args(["rotate-root", "--dir", path(&ca), "--activate"])
        .output()
        .unwrap();
    assert!(!again.status.success(), "nothing left to activate");
    // The SVID issued before the rotation still verifies with the new bundle.
    let pem_bundle = mesh_ca(&["bundle", "--dir", path(&ca)]);
    assert_eq!(
        mesh_ca::pem::parse_certs("bundle", &pem_bundle)
            .unwrap()
            .len(),
        2
    );
    let (ok, msg) = common::openssl_verify(tmp.path(), &pem_bundle, &chain, &read("cert.pem"));
    assert!(ok, "old SVID under the rotated bundle: {msg}");
}

#[tokio::test]
async fn serve_answers_a_workload_holding_a_cli_issued_token() {
    mesh_ca::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    mesh_ca(&["init", "--out", path(&ca)]);
    let token = mesh_ca(&[
        "token",
        "create",
        "--dir",
        path(&ca),
        "--spiffe-id",
        ID,
        "--single-use",
    ]);
    let mut child = Command::new(BIN)
        .args(["serve", "--dir", path(&ca), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    let client = CaClient::new(CaClientConfig {
        endpoint: format!("https://{addr}"),
        ca_roots_pem: std::fs::read_to_string(ca.join("root-cert.pem")).unwrap(),
        server_name: "mesh-ca".into(),
        credential: Credential::JoinToken(token.trim().to_string()),
        spiffe_id: ID.parse::<SpiffeId>().unwrap(),
        ttl: None,
    });
    let result = client.request(None).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let cert = result.unwrap();
    assert_eq!(cert.spiffe_id.to_string(), ID);
}
