//! Small PEM helpers: encoding DER as PEM and splitting PEM bundles into DER
//! certificates, with errors that say which file or field was wrong.

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why PEM input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The input is not valid PEM.
    #[error("{what}: not valid PEM: {source}")]
    Invalid {
        /// What was being read (file name or field).
        what: String,
        /// The decoder's reason.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The input holds no block of the expected kind.
    #[error("{what}: no {label} PEM block found")]
    Empty {
        /// What was being read (file name or field).
        what: String,
        /// The expected PEM label, e.g. `CERTIFICATE`.
        label: &'static str,
    },
}

/// Encodes DER bytes as a PEM block with the given label (64-column lines).
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Encodes a certificate as PEM.
pub fn cert_pem(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

/// Parses every `CERTIFICATE` block of a PEM bundle; fails if there is none.
pub fn parse_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Invalid {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            what: what.to_string(),
            label: "CERTIFICATE",
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_certificates_parse_back() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let pem = format!("{}{}", cert_pem(&der), cert_pem(&der));
        let certs = parse_certs("test", &pem).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), der.as_slice());
    }

    #[test]
    fn empty_bundle_names_the_input() {
        let err = parse_certs("root-cert.pem", "nothing here").unwrap_err();
        assert!(err.to_string().contains("root-cert.pem"), "{err}");
    }
}
