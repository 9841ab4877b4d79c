//! Every file under `examples/` is valid, analyzes clean and round-trips.

use std::path::PathBuf;

use mesh_model::analysis::analyze;
use mesh_model::{Resource, load_documents, parse_documents, to_yaml};

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_documented_examples_are_all_present() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for want in [
        "authz.yaml",
        "canary-split.yaml",
        "circuit-breaker.yaml",
        "fault-injection.yaml",
        "gateway.yaml",
        "header-routing.yaml",
        "rate-limit.yaml",
        "service-entry.yaml",
        "strict-mtls.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "missing {want}");
    }
}

#[test]
fn every_example_is_valid_and_analyzes_clean() {
    let mut all = Vec::new();
    for (name, text) in examples() {
        let (resources, errors) = load_documents(&text, &name);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(!resources.is_empty(), "{name}");
        let findings = analyze(&resources);
        assert!(findings.is_empty(), "{name}: {findings:#?}");
        all.extend(resources);
    }
    // Together too: the examples do not conflict with each other.
    let findings = analyze(&all);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn every_example_round_trips_through_json_and_yaml() {
    for (name, text) in examples() {
        let parsed = parse_documents(&text, &name).unwrap();

        let json = serde_json::to_string_pretty(&parsed).unwrap();
        let from_json = parse_documents(&json, "rt.json").unwrap();
        assert_eq!(parsed, from_json, "{name} via JSON:\n{json}");

        let yaml = to_yaml(&parsed).unwrap();
        let from_yaml = parse_documents(&yaml, "rt.yaml").unwrap();
        assert_eq!(parsed, from_yaml, "{name} via YAML:\n{yaml}");

        // And through serde's Deserialize for Resource (how stores read JSON).
        let values: Vec<Resource> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, values, "{name} via serde");
    }
}
