//! `meshctl demo` without the mesh's binaries next to it says which one is
//! missing and the command that builds them, before starting anything.

use std::process::Command;

#[test]
fn demo_names_the_missing_binary_and_the_build_command() {
    let dir = tempfile::tempdir().unwrap();
    let meshctl = dir.path().join("meshctl");
    std::fs::copy(env!("CARGO_BIN_EXE_meshctl"), &meshctl).unwrap();
    let out = Command::new(&meshctl)
        .args(["demo", "--mode", "explicit", "--duration", "1s"])
        .env("MESH_BIN_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("meshctl demo: explicit mode"), "{stdout}");
    assert!(stderr.contains("meshd not found"), "{stderr}");
    assert!(
        stderr.contains("cargo build --workspace --bins"),
        "{stderr}"
    );
    // The binaries are checked before anything starts: no later step ran.
    assert!(!stdout.contains("[2]"), "{stdout}");
}
