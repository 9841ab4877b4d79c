//! Trust bundles: the roots a workload trusts, as PEM and in the SPIFFE
//! bundle format (a JWK set with `use: x509-svid` keys carrying `x5c`). During
//! a root rotation the bundle holds the new and the old root.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::pem::cert_pem;

/// How often (seconds) bundle consumers should refresh, per the SPIFFE
/// bundle format's `spiffe_refresh_hint`.
pub const REFRESH_HINT_SECS: u64 = 300;

/// The trusted roots of one trust domain, current root first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: String,
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// A bundle of `roots` (current first) for `trust_domain`.
    pub fn new(trust_domain: &str, roots: Vec<CertificateDer<'static>>) -> Self {
        TrustBundle {
            trust_domain: trust_domain.to_string(),
            roots,
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The roots as DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Each root as a PEM block.
    pub fn roots_pem(&self) -> Vec<String> {
        self.roots.iter().map(|r| cert_pem(r)).collect()
    }

    /// All roots concatenated as one PEM bundle (what `-CAfile` takes).
    pub fn pem(&self) -> String {
        self.roots_pem().concat()
    }

    /// A rustls root store holding every root. Roots rustls cannot parse
    /// are skipped (they could not anchor a chain anyway).
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(self.roots.iter().cloned());
        if ignored > 0 {
            tracing::warn!(added, ignored, "trust bundle has roots rustls cannot use");
        }
        store
    }

    /// The bundle in the SPIFFE bundle format (JWK set JSON).
    pub fn spiffe_json(&self) -> String {
        let keys: Vec<Value> = self.roots.iter().filter_map(|r| jwk(r)).collect();
        json!({
            "keys": keys,
            "spiffe_refresh_hint": REFRESH_HINT_SECS,
        })
        .to_string()
    }
}

/// Strips the sign-padding zeros of a DER INTEGER for a JWK big number.
fn unsigned(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// One root as a JWK with `x5c`, or `None` for a key type JWK cannot carry
/// here (logged).
fn jwk(der: &CertificateDer<'_>) -> Option<Value> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let mut m = Map::new();
    m.insert("use".into(), "x509-svid".into());
    let b64 = |b: &[u8]| Value::from(URL_SAFE_NO_PAD.encode(b));
    if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let (crv, len) = match curve {
            Some(c) if c == OID_EC_P256 => ("P-256", 32),
            Some(c) if c == OID_NIST_EC_P384 => ("P-384", 48),
            _ => {
                tracing::warn!("root with an unsupported EC curve left out of the SPIFFE bundle");
                return None;
            }
        };
        let point = spki.subject_public_key.data.as_ref();
        // Uncompressed point: 0x04 || X || Y.
        if point.len() != 1 + 2 * len || point[0] != 4 {
            return None;
        }
        m.insert("kty".into(), "EC".into());
        m.insert("crv".into(), crv.into());
        m.insert("x".into(), b64(&point[1..1 + len]));
        m.insert("y".into(), b64(&point[1 + len..]));
    } else if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return None;
        };
        m.insert("kty".into(), "RSA".into());
        m.insert("n".into(), b64(unsigned(rsa.modulus)));
        m.insert("e".into(), b64(unsigned(rsa.exponent)));
    } else {
        tracing::warn!("root with an unsupported key type left out of the SPIFFE bundle");
        return None;
    }
    m.insert(
        "x5c".into(),
        Value::Array(vec![STANDARD.encode(der).into()]),
    );
    Some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn spiffe_bundle_lists_every_root_as_an_ec_jwk_with_x5c() {
        let (a, b) = (root(), root());
        let bundle = TrustBundle::new("cluster.local", vec![a.clone(), b]);
        let v: Value = serde_json::from_str(&bundle.spiffe_json()).unwrap();
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["use"], "x509-svid");
        assert_eq!(keys[0]["kty"], "EC");
        assert_eq!(keys[0]["crv"], "P-256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[0]["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let x5c = STANDARD
            .decode(keys[0]["x5c"][0].as_str().unwrap())
            .unwrap();
        assert_eq!(x5c, a.as_ref());
        assert_eq!(v["spiffe_refresh_hint"], REFRESH_HINT_SECS);
    }

    #[test]
    fn pem_bundle_round_trips_and_fills_a_root_store() {
        let bundle = TrustBundle::new("cluster.local", vec![root(), root()]);
        let parsed = crate::pem::parse_certs("bundle", &bundle.pem()).unwrap();
        assert_eq!(parsed, bundle.roots());
        assert_eq!(bundle.root_store().len(), 2);
    }
}
