//! The CA's signing material: a root, optionally an intermediate that does
//! the signing, and the trust bundle; created by `init`, plugged in from
//! Istio's `cacerts` layout, rotated by `rotate_root`.
//!
//! On-disk layout of a CA directory (Istio's `cacerts` names, so an
//! organisation's existing secret can be mounted as is):
//!
//! | file | content |
//! |---|---|
//! | `ca-cert.pem` | the signing certificate (root or intermediate) |
//! | `ca-key.pem` | its PKCS#8 private key |
//! | `root-cert.pem` | the current root |
//! | `cert-chain.pem` | the chain from `ca-cert.pem` up to the root |
//! | `root-key.pem` | only for a CA made by `init`: the root's key, needed by `rotate-root` |
//! | `trust-bundle.pem` | every trusted root, current first (two during a rotation) |
//! | `trust-domain` | the trust domain, written by `init` |
//! | `next-root/` | a prepared root rotation (see [`crate::rotation`]) |
//! | `join-token.key`, `used-join-tokens` | see [`crate::token`] |

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::pem::{PemError, cert_pem, parse_certs};

/// File holding the signing certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// File holding the signing key (PKCS#8 PEM).
pub const CA_KEY: &str = "ca-key.pem";
/// File holding the current root certificate.
pub const ROOT_CERT: &str = "root-cert.pem";
/// File holding the root's key (only for a CA made by `init`).
pub const ROOT_KEY: &str = "root-key.pem";
/// File holding the chain from the signing certificate to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// File holding every trusted root, current first.
pub const TRUST_BUNDLE: &str = "trust-bundle.pem";
/// File holding the trust domain.
pub const TRUST_DOMAIN: &str = "trust-domain";

/// Why the CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is malformed or empty.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate does not parse as X.509.
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// The private key could not be loaded.
    #[error(
        "{path}: cannot load the private key (it must be unencrypted PKCS#8 'PRIVATE KEY' PEM; convert with `openssl pkcs8 -topk8 -nocrypt`): {source}"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The signing key does not belong to the signing certificate.
    #[error("{CA_KEY} does not match the public key of {CA_CERT}")]
    KeyMismatch,
    /// The signing certificate is not a CA certificate.
    #[error("{CA_CERT} is not a CA certificate (basicConstraints CA:TRUE is required)")]
    NotCa,
    /// The signing certificate has expired.
    #[error("{what} expired at {not_after}; rotate or replace the CA")]
    Expired {
        /// Which certificate.
        what: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The trust domain is missing or invalid.
    #[error("trust domain {0:?} is invalid or missing (pass --trust-domain)")]
    TrustDomain(String),
    /// The directory already holds a CA and `init` would overwrite it.
    #[error("{0} already holds a CA ({CA_CERT} exists); refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// `rotate-root --activate` found no prepared rotation.
    #[error("{0} has no prepared root rotation; run `mesh-ca rotate-root` first")]
    NoPendingRotation(PathBuf),
    /// `rotate-root` found a rotation that was prepared but not activated.
    #[error(
        "{0} already has a prepared root rotation; activate it with `mesh-ca rotate-root --activate`"
    )]
    RotationPending(PathBuf),
    /// `rotate-root` needs the root key, which a plugged-in CA does not have.
    #[error(
        "{0} has no {ROOT_KEY}: a plugged-in CA is rotated by replacing its cacerts files (keep the old root in {TRUST_BUNDLE})"
    )]
    NoRootKey(PathBuf),
    /// Building or signing a certificate failed.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
    /// The requested key algorithm cannot be generated here.
    #[error("{0}")]
    KeyGeneration(String),
}

/// The key algorithm of a CA created by `init` or `rotate-root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default: small and fast to sign).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 bits, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 4096 bits, PKCS#1 v1.5 with SHA-256.
    Rsa4096,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, AuthorityError> {
        let alg = match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Rsa2048 => return generate_rsa(2048),
            KeyAlgorithm::Rsa4096 => return generate_rsa(4096),
        };
        Ok(KeyPair::generate_for(alg)?)
    }

    pub(crate) fn of(key: &KeyPair) -> Self {
        if key.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
            KeyAlgorithm::EcdsaP384
        } else if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            // Rotation keeps the family; a new RSA root gets at least 2048
            // bits, and 4096 when the old key was longer than 2048.
            let bits = key.public_key_raw().len() * 8;
            if bits > 2048 + 512 {
                KeyAlgorithm::Rsa4096
            } else {
                KeyAlgorithm::Rsa2048
            }
        } else {
            KeyAlgorithm::EcdsaP256
        }
    }
}

/// Generates an RSA key with the pure-Rust `rsa` crate (ring can load and
/// sign with RSA keys but not generate them) and hands it to ring as PKCS#8.
fn generate_rsa(bits: usize) -> Result<KeyPair, AuthorityError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| AuthorityError::KeyGeneration(format!("RSA {bits} key generation: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| AuthorityError::KeyGeneration(format!("RSA {bits} PKCS#8 encoding: {e}")))?;
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &pkcs8,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

/// How SVID lifetimes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuePolicy {
    /// Lifetime when the request asks for none.
    pub default_ttl: Duration,
    /// Longest lifetime granted, whatever the request asks.
    pub max_ttl: Duration,
    /// How far `notBefore` is set in the past, for clock skew between hosts.
    pub backdate: Duration,
}

impl Default for IssuePolicy {
    fn default() -> Self {
        IssuePolicy {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            backdate: Duration::from_secs(60),
        }
    }
}

/// Options of `init` (and of `rotate-root` for the new root).
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Key algorithm of the root (and intermediate).
    pub key_algorithm: KeyAlgorithm,
    /// Whether an intermediate does the signing (the root then only signs
    /// the intermediate and can be kept offline).
    pub intermediate: bool,
    /// Lifetime of the root.
    pub root_ttl: Duration,
    /// Lifetime of the intermediate (capped by the root's).
    pub intermediate_ttl: Duration,
}

impl InitOptions {
    /// Defaults for `trust_domain`: ECDSA P-256, no intermediate, a 10-year
    /// root and a 1-year intermediate.
    pub fn new(trust_domain: &str) -> Self {
        InitOptions {
            trust_domain: trust_domain.to_string(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            intermediate: false,
            root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
            intermediate_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// The key and certificate that sign SVIDs.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate, then any intermediates, ending at the root.
    chain_pem: Vec<String>,
    /// Earliest expiry along the chain: no SVID may outlive it.
    not_after: OffsetDateTime,
}

/// A loaded certificate authority: signing material, trust bundle and
/// lifetime policy. Cheap to share behind an `Arc`; signing takes `&self`.
pub struct CertificateAuthority {
    trust_domain: String,
    signer: Signer,
    bundle: TrustBundle,
    policy: IssuePolicy,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("signer_not_after", &self.signer.not_after)
            .field("roots", &self.bundle.roots().len())
            .field("policy", &self.policy)
            .field("dir", &self.dir)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn read(dir: &Path, name: &str) -> Result<String, AuthorityError> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(io_err(&path))
}

pub(crate) fn read_opt(dir: &Path, name: &str) -> Result<Option<String>, AuthorityError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes a file, private (0600) when it holds a key.
pub(crate) fn write_file(path: &Path, content: &str, private: bool) -> Result<(), AuthorityError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    {
        use std::io::Write;
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(content.as_bytes()).map_err(io_err(&tmp))?;
    }
    // Rename so a crash never leaves a half-written key or certificate.
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Random positive serial number of 16 bytes (RFC 5280 allows up to 20).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Clear the top bit so the DER INTEGER is positive, and keep the first
    // byte non-zero so the encoding has no leading zero to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn parse_not_after(what: &str, der: &[u8]) -> Result<(OffsetDateTime, bool), AuthorityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| AuthorityError::Certificate {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    Ok((cert.validity().not_after.to_datetime(), cert.is_ca()))
}

fn ca_params(trust_domain: &str, common_name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}

fn to_offset(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Generated material for a new root (and optional intermediate).
pub(crate) struct NewCa {
    pub(crate) root_pem: String,
    pub(crate) root_key_pem: String,
    pub(crate) ca_cert_pem: String,
    pub(crate) ca_key_pem: String,
    pub(crate) chain_pem: String,
}

pub(crate) fn generate(opts: &InitOptions) -> Result<NewCa, AuthorityError> {
    let now = OffsetDateTime::now_utc();
    let root_key = opts.key_algorithm.generate()?;
    let mut root_params = ca_params(&opts.trust_domain, "mesh root CA", None);
    root_params.not_before = now - time::Duration::minutes(5);
    root_params.not_after = now + to_offset(opts.root_ttl);
    let root_cert = root_params.self_signed(&root_key)?;
    let root_pem = root_cert.pem();
    if !opts.intermediate {
        return Ok(NewCa {
            chain_pem: root_pem.clone(),
            ca_cert_pem: root_pem.clone(),
            ca_key_pem: root_key.serialize_pem(),
            root_key_pem: root_key.serialize_pem(),
            root_pem,
        });
    }
    let root_issuer = Issuer::from_ca_cert_der(root_cert.der(), &root_key)?;
    let int_key = opts.key_algorithm.generate()?;
    let mut int_params = ca_params(&opts.trust_domain, "mesh intermediate CA", Some(0));
    int_params.not_before = root_params.not_before;
    int_params.not_after = (now + to_offset(opts.intermediate_ttl)).min(root_params.not_after);
    let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
    Ok(NewCa {
        chain_pem: format!("{}{}", int_cert.pem(), root_pem),
        ca_cert_pem: int_cert.pem(),
        ca_key_pem: int_key.serialize_pem(),
        root_key_pem: root_key.serialize_pem(),
        root_pem,
    })
}

impl CertificateAuthority {
    /// Creates a new CA in `dir` (created if missing) and loads it. Refuses
    /// to overwrite an existing CA.
    pub fn init(
        dir: &Path,
        opts: &InitOptions,
        policy: IssuePolicy,
    ) -> Result<Self, AuthorityError> {
        mesh_model::SpiffeId::new(&opts.trust_domain, "a", "b")
            .map_err(|_| AuthorityError::TrustDomain(opts.trust_domain.clone()))?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if dir.join(CA_CERT).exists() {
            return Err(AuthorityError::AlreadyInitialised(dir.to_path_buf()));
        }
        let new = generate(opts)?;
        write_file(&dir.join(ROOT_KEY), &new.root_key_pem, true)?;
        write_file(&dir.join(CA_KEY), &new.ca_key_pem, true)?;
        write_file(&dir.join(ROOT_CERT), &new.root_pem, false)?;
        write_file(&dir.join(CERT_CHAIN), &new.chain_pem, false)?;
        write_file(&dir.join(TRUST_BUNDLE), &new.root_pem, false)?;
        write_file(
            &dir.join(TRUST_DOMAIN),
            &format!("{}\n", opts.trust_domain),
            false,
        )?;
        // ca-cert.pem last: its presence marks a complete CA directory.
        write_file(&dir.join(CA_CERT), &new.ca_cert_pem, false)?;
        tracing::info!(dir = %dir.display(), trust_domain = %opts.trust_domain,
            intermediate = opts.intermediate, "initialised CA");
        Self::load(dir, Some(&opts.trust_domain), policy)
    }

    /// Loads the CA in `dir`, or creates one there (ECDSA P-256 root, no
    /// intermediate) when the directory holds none: meshd's default.
    pub fn load_or_init(
        dir: &Path,
        trust_domain: &str,
        policy: IssuePolicy,
    ) -> Result<Self, AuthorityError> {
        if dir.join(CA_CERT).exists() {
            Self::load(dir, Some(trust_domain), policy)
        } else {
            Self::init(dir, &InitOptions::new(trust_domain), policy)
        }
    }

    /// Loads a CA from a directory in the `cacerts` layout. The trust domain
    /// comes from `trust_domain`, else from the `trust-domain` file.
    pub fn load(
        dir: &Path,
        trust_domain: Option<&str>,
        policy: IssuePolicy,
    ) -> Result<Self, AuthorityError> {
        let td = match trust_domain {
            Some(td) => td.to_string(),
            None => read_opt(dir, TRUST_DOMAIN)?
                .map(|s| s.trim().to_string())
                .ok_or_else(|| AuthorityError::TrustDomain(String::new()))?,
        };
        let key_path = dir.join(CA_KEY);
        let mut ca = Self::from_pem(
            &td,
            &read(dir, CA_CERT)?,
            &read(dir, CA_KEY)?,
            read_opt(dir, CERT_CHAIN)?.as_deref(),
            &read(dir, ROOT_CERT)?,
            read_opt(dir, TRUST_BUNDLE)?.as_deref(),
            policy,
        )
        .map_err(|e| match e {
            AuthorityError::Key { source, .. } => AuthorityError::Key {
                path: key_path,
                source,
            },
            other => other,
        })?;
        ca.dir = Some(dir.to_path_buf());
        Ok(ca)
    }

    /// Builds a CA from PEM strings (e.g. a Kubernetes secret in the
    /// `cacerts` layout). `extra_roots_pem` is a bundle of further trusted
    /// roots (old roots during a rotation); expired ones are dropped.
    pub fn from_pem(
        trust_domain: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        cert_chain_pem: Option<&str>,
        root_cert_pem: &str,
        extra_roots_pem: Option<&str>,
        policy: IssuePolicy,
    ) -> Result<Self, AuthorityError> {
        mesh_model::SpiffeId::new(trust_domain, "a", "b")
            .map_err(|_| AuthorityError::TrustDomain(trust_domain.to_string()))?;
        let ca_cert = parse_certs(CA_CERT, ca_cert_pem)?.remove(0);
        let root = parse_certs(ROOT_CERT, root_cert_pem)?.remove(0);
        let key = KeyPair::from_pem(ca_key_pem).map_err(|source| AuthorityError::Key {
            path: PathBuf::from(CA_KEY),
            source,
        })?;
        let (_, parsed) =
            X509Certificate::from_der(&ca_cert).map_err(|e| AuthorityError::Certificate {
                what: CA_CERT.to_string(),
                reason: e.to_string(),
            })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(AuthorityError::KeyMismatch);
        }
        if !parsed.is_ca() {
            return Err(AuthorityError::NotCa);
        }
        // Chain: ca-cert, then whatever cert-chain.pem adds, ending at root.
        let mut chain: Vec<CertificateDer<'static>> = vec![ca_cert.clone()];
        if let Some(pem) = cert_chain_pem {
            for c in parse_certs(CERT_CHAIN, pem)? {
                if !chain.contains(&c) {
                    chain.push(c);
                }
            }
        }
        if chain.last() != Some(&root) {
            chain.retain(|c| c != &root);
            chain.push(root.clone());
        }
        let now = OffsetDateTime::now_utc();
        let mut not_after = OffsetDateTime::now_utc() + time::Duration::days(365 * 1000);
        for (i, c) in chain.iter().enumerate() {
            let what = if i == 0 { CA_CERT } else { CERT_CHAIN };
            let (na, _) = parse_not_after(what, c)?;
            if na <= now {
                return Err(AuthorityError::Expired {
                    what: what.to_string(),
                    not_after: na,
                });
            }
            not_after = not_after.min(na);
        }
        let mut roots = vec![root];
        if let Some(pem) = extra_roots_pem {
            for c in parse_certs(TRUST_BUNDLE, pem)? {
                let (na, _) = parse_not_after(TRUST_BUNDLE, &c)?;
                if na > now && !roots.contains(&c) {
                    roots.push(c);
                }
            }
        }
        let issuer = Issuer::from_ca_cert_der(&ca_cert, key)?;
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            signer: Signer {
                issuer,
                chain_pem: chain.iter().map(|c| cert_pem(c)).collect(),
                not_after,
            },
            bundle: TrustBundle::new(trust_domain, roots),
            policy,
            dir: None,
        })
    }

    /// The SPIFFE trust domain this CA issues for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The roots workloads must trust (two during a root rotation).
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The lifetime policy.
    pub fn policy(&self) -> IssuePolicy {
        self.policy
    }

    /// The directory the CA was loaded from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The signing certificate, then intermediates, ending at the root (PEM).
    pub fn signer_chain_pem(&self) -> &[String] {
        &self.signer.chain_pem
    }

    /// When the signing chain expires; no SVID outlives it.
    pub fn signer_not_after(&self) -> OffsetDateTime {
        self.signer.not_after
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.signer.issuer
    }
}
