//! `meshctl analyze` end to end through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn the_examples_directory_analyzes_clean() {
    let dir = examples_dir();
    let (code, stdout, stderr) = meshctl(&["analyze", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "✔ No validation issues found when analyzing 9 files\n"
    );
}

#[test]
fn each_example_file_analyzes_clean_on_its_own() {
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let (code, stdout, _) = meshctl(&["analyze", "-f", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {stdout}", path.display());
        assert_eq!(
            stdout,
            "✔ No validation issues found when analyzing 1 file\n"
        );
    }
}

const BROKEN: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec: {replicas: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  gateways: [missing]
  http:
  - rout: []
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  gateways: [missing]
  http:
  - route: [{destination: {host: details, subset: v2}}]
";

#[test]
fn errors_are_printed_with_their_location_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested");
    std::fs::create_dir(&nested).unwrap();
    let file = nested.join("reviews.yaml");
    std::fs::write(&file, BROKEN).unwrap();
    std::fs::write(nested.join("notes.txt"), "not config").unwrap();
    let f = file.display();
    let (code, stdout, _) = meshctl(&["analyze", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    let want = format!(
        "Error [MESH0001] VirtualService default/ratings ({f}#4): spec.http[0].rout: unknown field `rout`, expected one of `name`, `match`, `route`, `redirect`, `directResponse`, `delegate`, `rewrite`, `timeout`, `retries`, `fault`, `mirror`, `mirrors`, `mirrorPercentage`, `corsPolicy`, `headers`. Hint: fix the document so that it decodes
Error [MESH0002] VirtualService default/reviews ({f}#3): spec.http[0].route[0].weight: weights sum to 90, must be 100. Hint: fix the field named above
Error [MESH0101] VirtualService default/details ({f}#5): spec.http[0].route[0].destination.subset: subset \"v2\" of host \"details.default.svc.cluster.local\" is not defined by any DestinationRule. Hint: add subset \"v2\" to the DestinationRule for details.default.svc.cluster.local, or remove it from the route
Error [MESH0102] VirtualService default/details ({f}#5): spec.gateways[0]: gateway \"default/missing\" is not defined. Hint: create the Gateway, or fix the name (namespace/name, or name in the VirtualService's namespace)
✘ 4 errors and 0 warnings found when analyzing 1 file
"
    );
    assert_eq!(stdout, want);
}

#[test]
fn json_output_is_an_array_of_findings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(&file, BROKEN).unwrap();
    let (code, stdout, _) = meshctl(&["analyze", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let codes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["MESH0001", "MESH0002", "MESH0101", "MESH0102"]);
    assert_eq!(v[3]["resource"], "VirtualService default/details");
    assert_eq!(v[3]["source"], format!("{}#5", file.display()));
    assert_eq!(v[3]["severity"], "Error");
}

#[test]
fn warnings_alone_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.json");
    std::fs::write(
        &file,
        r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"a"},"spec":{"hosts":["a"],"http":[{"route":[{"destination":{"host":"elsewhere"}}]}]}}"#,
    )
    .unwrap();
    let (code, stdout, _) = meshctl(&["analyze", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("Warning [MESH0105] VirtualService default/a ("),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("✘ 0 errors and 1 warning found when analyzing 1 file\n"),
        "{stdout}"
    );
}

#[test]
fn a_missing_path_is_reported() {
    let (code, _, stderr) = meshctl(&["analyze", "-f", "/nonexistent/mesh.yaml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot read /nonexistent/mesh.yaml"),
        "{stderr}"
    );
}
