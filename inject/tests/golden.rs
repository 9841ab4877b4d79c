//! Golden-file tests of injection: every `golden/*.in.yaml` injects into
//! exactly its `*.out.yaml`. Set `UPDATE_GOLDEN=1` to rewrite the outputs
//! after an intended change, then review the diff.

use std::path::Path;

use mesh_inject::{InjectConfig, inject_documents};

fn golden_inputs() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 5,
        "golden inputs missing in {}",
        dir.display()
    );
    inputs
}

#[test]
fn injection_matches_golden_files() {
    let cfg = InjectConfig::default();
    let update = std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1");
    for input in golden_inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let got = inject_documents(&text, &input.display().to_string(), &cfg).unwrap();
        let out = input.to_string_lossy().replace(".in.yaml", ".out.yaml");
        if update {
            std::fs::write(&out, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&out)
            .unwrap_or_else(|_| panic!("{out} missing: run with UPDATE_GOLDEN=1"));
        assert_eq!(got, want, "{} differs from {out}", input.display());
    }
}

#[test]
fn injecting_twice_changes_nothing() {
    let cfg = InjectConfig::default();
    for input in golden_inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let once = inject_documents(&text, "once", &cfg).unwrap();
        let twice = inject_documents(&once, "twice", &cfg).unwrap();
        assert_eq!(once, twice, "{}", input.display());
    }
}
