//! Locating the workspace's binaries from an e2e test. Cargo only builds a
//! package's own binaries for its tests, so the suite expects
//! `cargo build --workspace --bins` first (scripts/test.sh does it).

use std::path::PathBuf;

/// Path of a workspace binary in the same target directory as the running
/// test. Panics with the command to run when it is missing, since a test
/// that cannot find the mesh cannot say anything about it.
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}
