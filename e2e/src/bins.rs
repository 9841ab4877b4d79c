//! Locating the workspace's binaries. Cargo only builds a package's own
//! binaries for its tests, so the suite expects `cargo build --workspace
//! --bins` first (scripts/test.sh does it); `meshctl demo` looks next to its
//! own executable, or in `MESH_BIN_DIR`.

use std::path::PathBuf;

/// The command that builds every binary the local mesh runs.
pub const BUILD_HINT: &str = "cargo build --workspace --bins";

/// Environment variable naming the directory that holds the mesh's binaries.
pub const BIN_DIR_ENV: &str = "MESH_BIN_DIR";

/// A binary the local mesh needs is not where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} not found in {}: build the mesh's binaries with `{BUILD_HINT}` \
     (or point {BIN_DIR_ENV} at the directory that holds them)",
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct BinNotFound {
    /// The binary's name, e.g. `mesh-proxy`.
    pub name: String,
    /// The directories searched.
    pub dirs: Vec<PathBuf>,
}

/// Where to look for the mesh's binaries, in order: `MESH_BIN_DIR` when
/// set, then the directory of the running executable, then its parent (a
/// test executable lives in `target/<profile>/deps/`).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            dirs.push(up.to_path_buf());
        }
    }
    dirs
}

/// Finds binary `name` in `dirs` (the first directory holding it wins).
pub fn find_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, BinNotFound> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| BinNotFound {
            name: name.to_string(),
            dirs: dirs.to_vec(),
        })
}

/// Finds binary `name` in [`search_dirs`].
pub fn find_bin(name: &str) -> Result<PathBuf, BinNotFound> {
    find_in(name, &search_dirs())
}

/// Path of a workspace binary in the same target directory as the running
/// test. Panics with the command to run when it is missing, since a test
/// that cannot find the mesh cannot say anything about it.
pub fn workspace_bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The binaries [`crate::mesh::NetnsMesh`] runs; all must exist before a
/// mesh starts, so a missing one is reported before anything is created.
pub const MESH_BINS: [&str; 6] = [
    "meshd",
    "mesh-ca",
    "mesh-proxy",
    "mesh-demo-app",
    "mesh-load",
    "meshctl",
];

/// Checks that every binary in `names` exists in `dirs`; the error names
/// the first missing one.
pub fn check_all(names: &[&str], dirs: &[PathBuf]) -> Result<(), BinNotFound> {
    names.iter().try_for_each(|n| find_in(n, dirs).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_names_it_and_the_build_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_in("mesh-proxy", &[dir.path().to_path_buf()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mesh-proxy not found"), "{text}");
        assert!(text.contains("cargo build --workspace --bins"), "{text}");
        assert!(text.contains("MESH_BIN_DIR"), "{text}");
    }

    #[test]
    fn first_directory_holding_the_binary_wins() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(b.path().join("meshd"), "").unwrap();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in("meshd", &dirs).unwrap(), b.path().join("meshd"));
        assert!(check_all(&["meshd"], &dirs).is_ok());
        assert!(check_all(&["meshd", "meshctl"], &dirs).is_err());
    }
}
