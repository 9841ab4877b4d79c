//! Parsing and checking a workload's PKCS#10 certificate signing request
//! before anything is signed: the PEM and DER decode, the key is strong and of
//! a known kind, the signature verifies, and exactly one URI SAN names a
//! SPIFFE ID.

use mesh_model::SpiffeId;
use mesh_model::spiffe::SpiffeIdError;
use rcgen::{PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Smallest RSA modulus the CA signs for, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a CSR was rejected. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The input is not a PEM `CERTIFICATE REQUEST`.
    #[error("CSR is not a PEM CERTIFICATE REQUEST: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The DER inside the PEM does not decode as PKCS#10.
    #[error("CSR does not decode as PKCS#10: {0}")]
    Der(String),
    /// Bytes follow the CSR.
    #[error("CSR has {0} trailing bytes after the request")]
    TrailingBytes(usize),
    /// The key is an RSA key shorter than [`MIN_RSA_BITS`].
    #[error(
        "CSR key is RSA {bits} bits; the minimum is {MIN_RSA_BITS} (use ECDSA P-256 or RSA 2048+)"
    )]
    WeakKey {
        /// The modulus size.
        bits: usize,
    },
    /// The key algorithm or curve is not one the CA signs.
    #[error("CSR key algorithm {0} is not supported (use ECDSA P-256/P-384, Ed25519 or RSA 2048+)")]
    UnsupportedKey(String),
    /// The signature algorithm is not one the CA accepts (e.g. SHA-1).
    #[error("CSR signature algorithm {0} is not supported (use SHA-256 or stronger)")]
    UnsupportedSignature(String),
    /// The CSR's self-signature does not verify with its own key.
    #[error("CSR signature does not verify with the CSR's public key")]
    BadSignature,
    /// The CSR does not request exactly one URI SAN.
    #[error("CSR must request exactly one URI SAN (the SPIFFE ID), found {0}")]
    UriSanCount(usize),
    /// The URI SAN is not a mesh SPIFFE ID.
    #[error("CSR URI SAN is not a valid SPIFFE ID: {0}")]
    SpiffeId(#[source] SpiffeIdError),
    /// An extension in the request could not be parsed.
    #[error("CSR extension request is malformed: {0}")]
    Extension(String),
}

/// A CSR whose signature verified and whose key and identity passed the
/// checks; the only input [`crate::CertificateAuthority::sign_csr`] takes.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The SPIFFE ID the CSR asks for (its one URI SAN).
    pub spiffe_id: SpiffeId,
    /// The subject's public key, to be certified.
    pub public_key: CsrPublicKey,
}

/// A workload public key taken from a verified CSR.
#[derive(Debug, Clone)]
pub struct CsrPublicKey {
    /// The `subjectPublicKey` bits (without the SPKI algorithm wrapper).
    key: Vec<u8>,
    alg: &'static SignatureAlgorithm,
    rsa: bool,
}

impl CsrPublicKey {
    /// True for RSA keys, which also get the `keyEncipherment` key usage.
    pub fn is_rsa(&self) -> bool {
        self.rsa
    }
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Parses and verifies a PEM-encoded CSR.
pub fn verify_csr_pem(pem: &str) -> Result<VerifiedCsr, CsrError> {
    let der =
        CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(CsrError::Pem)?;
    verify_csr_der(der.as_ref())
}

/// Parses and verifies a DER-encoded CSR.
pub fn verify_csr_der(der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingBytes(rest.len()));
    }
    // Key checks come before the signature check so that a weak key is
    // reported as weak rather than as a signature ring refuses to verify.
    let public_key = check_key(&csr)?;
    check_signature_algorithm(&csr)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let spiffe_id = requested_spiffe_id(&csr)?;
    Ok(VerifiedCsr {
        spiffe_id,
        public_key,
    })
}

fn check_key(csr: &X509CertificationRequest<'_>) -> Result<CsrPublicKey, CsrError> {
    let spki = &csr.certification_request_info.subject_pki;
    let oid = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.to_vec();
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(CsrError::UnsupportedKey("malformed RSA key".to_string())),
        };
        if bits < MIN_RSA_BITS {
            return Err(CsrError::WeakKey { bits });
        }
        return Ok(CsrPublicKey {
            key,
            alg: &rcgen::PKCS_RSA_SHA256,
            rsa: true,
        });
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let alg = match curve {
            Some(c) if c == OID_EC_P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Some(c) if c == OID_NIST_EC_P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Some(c) => return Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
            None => return Err(CsrError::UnsupportedKey("EC key without curve".to_string())),
        };
        return Ok(CsrPublicKey {
            key,
            alg,
            rsa: false,
        });
    }
    if *oid == OID_SIG_ED25519 {
        return Ok(CsrPublicKey {
            key,
            alg: &rcgen::PKCS_ED25519,
            rsa: false,
        });
    }
    Err(CsrError::UnsupportedKey(oid.to_id_string()))
}

fn check_signature_algorithm(csr: &X509CertificationRequest<'_>) -> Result<(), CsrError> {
    let oid = &csr.signature_algorithm.algorithm;
    let known = [
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ED25519,
    ];
    if known.iter().any(|k| k == oid) {
        Ok(())
    } else {
        Err(CsrError::UnsupportedSignature(oid.to_id_string()))
    }
}

fn requested_spiffe_id(csr: &X509CertificationRequest<'_>) -> Result<SpiffeId, CsrError> {
    let mut uris = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::URI(uri) = name {
                            uris.push(*uri);
                        }
                    }
                }
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::Extension(error.to_string()));
                }
                _ => {}
            }
        }
    }
    match uris.as_slice() {
        [one] => one.parse().map_err(CsrError::SpiffeId),
        other => Err(CsrError::UriSanCount(other.len())),
    }
}

/// Builds a PEM CSR for `id` signed by `key`, as a workload does. Used by the
/// client, the offline `issue` command, tests and benchmarks.
pub fn build_csr_pem(id: &SpiffeId, key: &rcgen::KeyPair) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into()?)];
    params.serialize_request(key)?.pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SpiffeId {
        "spiffe://cluster.local/ns/default/sa/reviews"
            .parse()
            .unwrap()
    }

    #[test]
    fn accepts_a_p256_csr_and_returns_its_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = build_csr_pem(&id(), &key).unwrap();
        let csr = verify_csr_pem(&pem).unwrap();
        assert_eq!(csr.spiffe_id, id());
        assert!(!csr.public_key.is_rsa());
        assert_eq!(csr.public_key.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn rejects_a_csr_with_a_tampered_signature() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = build_csr_pem(&id(), &key).unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        // The signature is the last field; flipping its last byte breaks it.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let err = verify_csr_der(&der).unwrap_err();
        assert!(matches!(err, CsrError::BadSignature), "{err}");
    }

    #[test]
    fn rejects_a_csr_with_two_uri_sans() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://cluster.local/ns/c/sa/d".try_into().unwrap()),
        ];
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = verify_csr_pem(&pem).unwrap_err();
        assert!(matches!(err, CsrError::UriSanCount(2)), "{err}");
        assert!(err.to_string().contains("exactly one URI SAN"));
    }

    #[test]
    fn rejects_a_csr_without_a_uri_san() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = verify_csr_pem(&pem).unwrap_err();
        assert!(matches!(err, CsrError::UriSanCount(0)), "{err}");
    }

    #[test]
    fn rejects_a_uri_san_that_is_not_a_mesh_spiffe_id() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/workload".try_into().unwrap(),
        )];
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = verify_csr_pem(&pem).unwrap_err();
        assert!(matches!(err, CsrError::SpiffeId(_)), "{err}");
    }

    /// A cheap stand-in for the fuzz target: corrupted and truncated CSRs
    /// are rejected with an error, never a panic, and never accepted with
    /// a changed identity.
    #[test]
    fn corrupted_csrs_are_rejected_without_panicking() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = build_csr_pem(&id(), &key).unwrap();
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bytes = der.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            if next() % 5 == 0 {
                bytes.truncate((next() as usize) % bytes.len());
            }
            if let Ok(csr) = verify_csr_der(&bytes) {
                assert_eq!(csr.spiffe_id, id(), "a corrupted CSR changed identity");
            }
        }
    }

    #[test]
    fn rejects_input_that_is_not_pem() {
        let err = verify_csr_pem("hello").unwrap_err();
        assert!(matches!(err, CsrError::Pem(_)), "{err}");
    }
}
