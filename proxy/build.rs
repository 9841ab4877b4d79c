//! Links `mesh-proxy` with packed relative relocations (`DT_RELR`) where
//! the toolchain and the C library support them.
//!
//! A sidecar's idle memory is mostly its executable's pages
//! (docs/performance.md); RELR stores the relocation table in a fraction of
//! the space and leaves fewer relocated read-only pages resident. It needs
//! a linker that knows `-z pack-relative-relocs` and glibc 2.36 or later
//! (Debian 12, the proxy image). The flag is probed by linking and running
//! a tiny program with the same C compiler: where either part is missing
//! the proxy links as before, so the build never fails because of it.

use std::path::Path;
use std::process::Command;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESH_NO_RELR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let same_target = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    if target_os != "linux"
        || target_env != "gnu"
        || !same_target
        || std::env::var_os("MESH_NO_RELR").is_some()
    {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    if relr_works(Path::new(&out)) {
        println!("cargo:rustc-link-arg-bin=mesh-proxy={FLAG}");
    } else {
        println!("cargo:warning=linking mesh-proxy without {FLAG} (not supported here)");
    }
}

/// Whether the C compiler links a program with RELR that then runs.
fn relr_works(out: &Path) -> bool {
    let source = out.join("relr_probe.c");
    let binary = out.join("relr_probe");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let linked = Command::new(cc)
        .arg(FLAG)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&binary).status().is_ok_and(|s| s.success())
}
