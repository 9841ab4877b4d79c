//! Root rotation in two steps, so that no workload ever meets a certificate
//! it cannot verify:
//!
//! 1. **prepare**: a new root (and a new intermediate if the CA uses one) is
//!    generated into `next-root/`, and the new root is added to
//!    `trust-bundle.pem`. Signing continues with the old signer; workloads
//!    pick up the two-root bundle at their next renewal.
//! 2. **activate** (after at least half the longest SVID lifetime, when every
//!    workload has renewed): the prepared signer replaces the current one.
//!    The old root stays in the bundle until it expires, so SVIDs issued
//!    under it keep verifying.
//!
//! [`CertificateAuthority::rotate_root`] does both at once, for a CA whose
//! workloads can all be restarted (or for tests).

use std::fs;
use std::path::Path;

use rcgen::KeyPair;

use crate::authority::{
    AuthorityError, CA_CERT, CA_KEY, CERT_CHAIN, CertificateAuthority, InitOptions, IssuePolicy,
    KeyAlgorithm, ROOT_CERT, ROOT_KEY, TRUST_BUNDLE, generate, read, read_opt, write_file,
};
use crate::pem::{cert_pem, parse_certs};

/// Sub-directory holding a prepared rotation.
pub const NEXT_ROOT_DIR: &str = "next-root";

/// The files that make up a signer, in the order they are written (the
/// signing certificate last: its presence marks a complete set).
const SIGNER_FILES: [(&str, bool); 5] = [
    (ROOT_KEY, true),
    (CA_KEY, true),
    (ROOT_CERT, false),
    (CERT_CHAIN, false),
    (CA_CERT, false),
];

impl CertificateAuthority {
    /// Step 1: generates the next root (and intermediate) into `next-root/`
    /// and adds the new root to the trust bundle; signing is unchanged.
    pub fn prepare_root_rotation(dir: &Path, policy: IssuePolicy) -> Result<Self, AuthorityError> {
        let root_key_pem =
            read_opt(dir, ROOT_KEY)?.ok_or_else(|| AuthorityError::NoRootKey(dir.to_path_buf()))?;
        let next = dir.join(NEXT_ROOT_DIR);
        if next.join(CA_CERT).exists() {
            return Err(AuthorityError::RotationPending(dir.to_path_buf()));
        }
        let current = Self::load(dir, None, policy)?;
        let root_key = KeyPair::from_pem(&root_key_pem).map_err(|source| AuthorityError::Key {
            path: dir.join(ROOT_KEY),
            source,
        })?;
        let mut opts = InitOptions::new(current.trust_domain());
        opts.key_algorithm = KeyAlgorithm::of(&root_key);
        opts.intermediate = parse_certs(CA_CERT, &read(dir, CA_CERT)?)?
            != parse_certs(ROOT_CERT, &read(dir, ROOT_CERT)?)?;
        let new = generate(&opts)?;
        fs::create_dir_all(&next).map_err(|source| AuthorityError::Io {
            path: next.clone(),
            source,
        })?;
        let contents = [
            &new.root_key_pem,
            &new.ca_key_pem,
            &new.root_pem,
            &new.chain_pem,
            &new.ca_cert_pem,
        ];
        for ((name, private), content) in SIGNER_FILES.iter().zip(contents) {
            write_file(&next.join(name), content, *private)?;
        }
        let mut bundle: String = current
            .trust_bundle()
            .roots()
            .iter()
            .map(|r| cert_pem(r))
            .collect();
        bundle.push_str(&new.root_pem);
        write_file(&dir.join(TRUST_BUNDLE), &bundle, false)?;
        tracing::info!(dir = %dir.display(), "root rotation prepared: new root added to the trust bundle");
        Self::load(dir, None, policy)
    }

    /// Step 2: the prepared signer takes over; the old root stays in the
    /// trust bundle until it expires.
    pub fn activate_root_rotation(dir: &Path, policy: IssuePolicy) -> Result<Self, AuthorityError> {
        let next = dir.join(NEXT_ROOT_DIR);
        if !next.join(CA_CERT).exists() {
            return Err(AuthorityError::NoPendingRotation(dir.to_path_buf()));
        }
        let current = Self::load(dir, None, policy)?;
        let mut files = Vec::new();
        for (name, private) in SIGNER_FILES {
            files.push((name, private, read(&next, name)?));
        }
        // Refuse to switch to a signer that does not load.
        let bundle = read_opt(dir, TRUST_BUNDLE)?;
        let get = |n: &str| {
            files
                .iter()
                .find(|(name, _, _)| *name == n)
                .map(|(_, _, c)| c.as_str())
        };
        Self::from_pem(
            current.trust_domain(),
            get(CA_CERT).unwrap_or_default(),
            get(CA_KEY).unwrap_or_default(),
            get(CERT_CHAIN),
            get(ROOT_CERT).unwrap_or_default(),
            bundle.as_deref(),
            policy,
        )?;
        for (name, private, content) in &files {
            write_file(&dir.join(name), content, *private)?;
        }
        fs::remove_dir_all(&next).map_err(|source| AuthorityError::Io {
            path: next.clone(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), "root rotation activated: the new root signs");
        Self::load(dir, None, policy)
    }

    /// Both steps at once: the new root signs immediately, and the old
    /// roots stay trusted until they expire.
    pub fn rotate_root(dir: &Path, policy: IssuePolicy) -> Result<Self, AuthorityError> {
        Self::prepare_root_rotation(dir, policy)?;
        Self::activate_root_rotation(dir, policy)
    }
}
