//! Two jobs, both pure Rust so a fresh machine needs no `protoc`:
//!
//! 1. compiles the mesh's own protos (`proto/mesh/...`) with protox;
//! 2. embeds the protobuf descriptors of the Envoy messages that the
//!    Envoy-format config dumps encode as proto3 JSON (`src/envoy_json.rs`).
//!
//! `envoy-types` ships the descriptor set its Rust types were generated from
//! (`src/generated/types.bin`, 3.3 MB) but exposes no Rust item for it. This
//! script finds the crate with `cargo metadata`, keeps only the files the dump
//! needs (the admin `ConfigDump` and the extensions meshd emits, with their
//! imports: about a third of the set) and writes them to `OUT_DIR`.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::path::PathBuf;

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// The files whose messages may appear in a dump, directly or packed in an
/// `Any` (filters, transport sockets, protocol options).
const ROOTS: &[&str] = &[
    "envoy/admin/v3/config_dump.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
];

fn envoy_types_dir() -> Result<PathBuf, Box<dyn Error>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let path = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("envoy-types is not in cargo metadata's package list")?;
    let dir = PathBuf::from(path)
        .parent()
        .ok_or("envoy-types manifest has no parent directory")?
        .to_path_buf();
    Ok(dir)
}

/// The mesh's own gRPC APIs.
fn compile_mesh_protos() -> Result<(), Box<dyn Error>> {
    let protos = ["proto/mesh/ca/v1/ca.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    compile_mesh_protos()?;
    embed_envoy_descriptors()
}

/// Writes the pruned Envoy descriptor set to `OUT_DIR/envoy_descriptors.bin`.
fn embed_envoy_descriptors() -> Result<(), Box<dyn Error>> {
    let bin = envoy_types_dir()?.join("src/generated/types.bin");
    println!("cargo:rerun-if-changed={}", bin.display());
    let set = FileDescriptorSet::decode(std::fs::read(&bin)?.as_slice())?;
    let by_name: HashMap<&str, &FileDescriptorProto> =
        set.file.iter().map(|f| (f.name(), f)).collect();
    // Depth-first, dependencies before dependants.
    let mut seen = HashSet::new();
    let mut ordered = Vec::new();
    let mut stack: Vec<(&str, bool)> = ROOTS.iter().rev().map(|r| (*r, false)).collect();
    while let Some((name, expanded)) = stack.pop() {
        if expanded {
            if let Some(f) = by_name.get(name) {
                ordered.push((*f).clone());
            }
            continue;
        }
        if !seen.insert(name) {
            continue;
        }
        let file = by_name
            .get(name)
            .ok_or_else(|| format!("{name} is not in envoy-types' descriptor set"))?;
        stack.push((name, true));
        for dep in file.dependency.iter().rev() {
            if !seen.contains(dep.as_str()) {
                stack.push((dep.as_str(), false));
            }
        }
    }
    let pruned = FileDescriptorSet { file: ordered };
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("envoy_descriptors.bin");
    std::fs::write(out, pruned.encode_to_vec())?;
    Ok(())
}
