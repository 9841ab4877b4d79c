//! Shared helpers for the CA's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs a command and returns (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .expect("command runs (is openssl installed? scripts/test.sh installs it)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `openssl verify -CAfile root -untrusted chain leaf`.
pub fn openssl_verify(
    dir: &Path,
    root_pem: &str,
    chain_pem: &str,
    leaf_pem: &str,
) -> (bool, String) {
    std::fs::write(dir.join("v-root.pem"), root_pem).unwrap();
    std::fs::write(dir.join("v-chain.pem"), chain_pem).unwrap();
    std::fs::write(dir.join("v-leaf.pem"), leaf_pem).unwrap();
    run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("v-root.pem"))
        .arg("-untrusted")
        .arg(dir.join("v-chain.pem"))
        .arg(dir.join("v-leaf.pem")))
}

/// A PEM CSR made by openssl with an RSA key of `bits` and the given URI SANs.
pub fn openssl_rsa_csr(dir: &Path, bits: u32, uris: &[&str]) -> String {
    let san = uris
        .iter()
        .map(|u| format!("URI:{u}"))
        .collect::<Vec<_>>()
        .join(",");
    let csr = dir.join(format!("rsa{bits}.csr"));
    let (ok, out) = run(Command::new("openssl")
        .args(["req", "-new", "-newkey"])
        .arg(format!("rsa:{bits}"))
        .args(["-nodes", "-subj", "/O=test", "-keyout"])
        .arg(dir.join(format!("rsa{bits}.key")))
        .arg("-out")
        .arg(&csr)
        .arg("-addext")
        .arg(format!("subjectAltName={san}")));
    assert!(ok, "openssl req failed: {out}");
    std::fs::read_to_string(csr).unwrap()
}
