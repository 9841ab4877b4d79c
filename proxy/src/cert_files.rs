//! An SVID from files instead of the CA (`--cert-dir`): the layout Istio
//! mounts for file-provisioned certificates and `mesh-ca issue` writes —
//! `cert-chain.pem` (leaf first), `key.pem` (PKCS#8 or SEC1) and
//! `root-cert.pem` (one or more trusted roots). Loaded once at start: no
//! rotation (benchmarks, and setups where something else rotates the files
//! and restarts the proxy).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::Svid;

/// Leaf certificate followed by its intermediates.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The leaf's private key.
pub const KEY: &str = "key.pem";
/// The trusted roots.
pub const ROOT_CERT: &str = "root-cert.pem";

/// Why the certificate directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertFilesError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: not valid PEM ({what})")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no certificate.
    #[error("{path}: no CERTIFICATE block")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn read(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), CertFilesError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(source) => Err(CertFilesError::Read { path, source }),
    }
}

fn certs(dir: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>, CertFilesError> {
    let (path, bytes) = read(dir, name)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertFilesError::Pem {
            path: path.clone(),
            what: "certificates",
            source,
        })?;
    if certs.is_empty() {
        return Err(CertFilesError::Empty { path });
    }
    Ok(certs)
}

/// Loads the SVID from `dir`.
pub fn load(dir: &Path) -> Result<Svid, CertFilesError> {
    let chain = certs(dir, CERT_CHAIN)?;
    let roots = certs(dir, ROOT_CERT)?;
    let (path, bytes) = read(dir, KEY)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| CertFilesError::Pem {
        path,
        what: "private key",
        source,
    })?;
    Ok(Svid { chain, key, roots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_istio_file_layout_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join(CERT_CHAIN), cert.pem()).unwrap();
        std::fs::write(dir.path().join(ROOT_CERT), cert.pem()).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
        std::fs::write(dir.path().join(KEY), key.serialize_pem()).unwrap();
        let svid = load(dir.path()).unwrap();
        assert_eq!(svid.chain.len(), 1);
        assert_eq!(svid.roots.len(), 1);
        std::fs::write(dir.path().join(ROOT_CERT), "garbage").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CertFilesError::Empty { .. })
        ));
    }
}
