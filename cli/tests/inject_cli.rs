//! `meshctl inject` reads a file or stdin and prints injected YAML.

use std::io::Write;
use std::process::{Command, Stdio};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: nginx\n";

#[test]
fn inject_reads_stdin_and_prints_the_injected_pod() {
    let mut child = Command::new(MESHCTL)
        .args([
            "inject",
            "-f",
            "-",
            "--native-sidecar",
            "--image",
            "example/proxy:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(POD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("restartPolicy: Always"), "{yaml}");
    assert!(yaml.contains("image: example/proxy:1"), "{yaml}");
    assert!(yaml.contains("sidecar.mesh.dev/status"), "{yaml}");
}

#[test]
fn inject_of_a_missing_file_says_what_to_do() {
    let out = Command::new(MESHCTL)
        .args(["inject", "-f", "/nonexistent/web.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("reading /nonexistent/web.yaml (pass -f - to read stdin)"),
        "{err}"
    );
}
