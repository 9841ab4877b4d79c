//! The benchmark's certificates: a fresh mesh CA (the `mesh-ca` library,
//! ECDSA P-256 like `mesh-ca init`) and one SVID per side, written in the
//! layout both `mesh-proxy --cert-dir` and Envoy's static secrets read
//! (`cert-chain.pem`, `key.pem`, `root-cert.pem`), plus `combined.pem`
//! (chain then key) for HAProxy.

use std::path::{Path, PathBuf};

use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, SpiffeId};

use super::BenchError;

/// Trust domain of the benchmark.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// SPIFFE ID of a side (`client` or `server`) in namespace `bench`.
pub fn spiffe_id(side: &str) -> Result<SpiffeId, BenchError> {
    SpiffeId::new(TRUST_DOMAIN, "bench", side).map_err(|e| BenchError::Certs(e.to_string()))
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(&format!("write {}", path.display()), e))
}

/// Makes a CA under `dir/ca` and SVIDs under `dir/<side>` for each of
/// `sides`; returns the SVID directories in order.
pub fn make(dir: &Path, sides: &[&str]) -> Result<Vec<PathBuf>, BenchError> {
    let ca = CertificateAuthority::init(
        &dir.join("ca"),
        &InitOptions::new(TRUST_DOMAIN),
        IssuePolicy::default(),
    )
    .map_err(|e| BenchError::Certs(e.to_string()))?;
    let root = ca.trust_bundle().pem();
    let mut out = Vec::new();
    for side in sides {
        let issued = ca
            .issue_with_new_key(&spiffe_id(side)?, None)
            .map_err(|e| BenchError::Certs(e.to_string()))?;
        let svid_dir = dir.join(side);
        std::fs::create_dir_all(&svid_dir).map_err(|e| BenchError::io("mkdir", e))?;
        let chain = issued.cert.chain_pem.concat();
        write(&svid_dir.join("cert-chain.pem"), &chain)?;
        write(&svid_dir.join("key.pem"), &issued.key_pem)?;
        write(&svid_dir.join("root-cert.pem"), &root)?;
        write(
            &svid_dir.join("combined.pem"),
            &format!("{chain}{}", issued.key_pem),
        )?;
        out.push(svid_dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svid_per_side_in_the_istio_file_layout() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = make(dir.path(), &["client", "server"]).unwrap();
        assert_eq!(dirs.len(), 2);
        for d in &dirs {
            for f in ["cert-chain.pem", "key.pem", "root-cert.pem", "combined.pem"] {
                let text = std::fs::read_to_string(d.join(f)).unwrap();
                assert!(text.contains("-----BEGIN"), "{f}");
            }
        }
    }
}
