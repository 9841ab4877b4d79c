//! SVIDs issued by the CA verify with openssl and carry exactly what the
//! SPIFFE X509-SVID spec requires; plug-in CAs and root rotation work.

mod common;

use std::process::Command;
use std::time::Duration;

use mesh_ca::csr::{build_csr_pem, verify_csr_pem};
use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, SpiffeId};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn id() -> SpiffeId {
    "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    mesh_ca::pem::parse_certs("test", pem).unwrap()[0]
        .as_ref()
        .to_vec()
}

fn sign(ca: &CertificateAuthority, ttl: Option<Duration>) -> Vec<String> {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = verify_csr_pem(&build_csr_pem(&id(), &key).unwrap()).unwrap();
    ca.sign_csr(&csr, ttl).unwrap().chain_pem
}

fn check_svid_fields(leaf_pem: &str, ttl: Duration, rsa: bool) {
    let der = der(leaf_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let uris: Vec<_> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![id().to_string().as_str()]);
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca, "SVID must be CA:FALSE");
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert_eq!(ku.key_encipherment(), rsa);
    assert!(!ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let now = OffsetDateTime::now_utc();
    let nb = cert.validity().not_before.to_datetime();
    let na = cert.validity().not_after.to_datetime();
    assert!(
        nb < now - time::Duration::seconds(30),
        "notBefore is backdated"
    );
    let lifetime = na - now;
    let want = time::Duration::seconds(ttl.as_secs() as i64);
    assert!(
        (lifetime - want).abs() < time::Duration::seconds(10),
        "lifetime {lifetime} vs {want}"
    );
    assert!(cert.raw_serial().len() >= 8, "serial is random and long");
}

#[test]
fn svid_from_root_ca_verifies_with_openssl_and_has_spiffe_fields() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        &dir.path().join("ca"),
        &InitOptions::new("cluster.local"),
        IssuePolicy::default(),
    )
    .unwrap();
    let chain = sign(&ca, None);
    assert_eq!(chain.len(), 2, "leaf + root");
    let (ok, out) = common::openssl_verify(
        dir.path(),
        &ca.trust_bundle().pem(),
        &chain[1..].concat(),
        &chain[0],
    );
    assert!(ok, "openssl verify: {out}");
    check_svid_fields(&chain[0], Duration::from_secs(24 * 3600), false);
}

#[test]
fn svid_through_an_intermediate_carries_the_full_chain_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    let ca =
        CertificateAuthority::init(&dir.path().join("ca"), &opts, IssuePolicy::default()).unwrap();
    let chain = sign(&ca, Some(Duration::from_secs(3600)));
    assert_eq!(chain.len(), 3, "leaf + intermediate + root");
    assert_eq!(chain[2], ca.trust_bundle().pem(), "chain ends at the root");
    let (ok, out) = common::openssl_verify(dir.path(), &chain[2], &chain[1..].concat(), &chain[0]);
    assert!(ok, "openssl verify: {out}");
    check_svid_fields(&chain[0], Duration::from_secs(3600), false);
}

#[test]
fn lifetime_is_capped_by_policy_and_by_the_signers_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let policy = IssuePolicy {
        max_ttl: Duration::from_secs(2 * 3600),
        ..IssuePolicy::default()
    };
    let ca = CertificateAuthority::init(
        &dir.path().join("a"),
        &InitOptions::new("cluster.local"),
        policy,
    )
    .unwrap();
    let chain = sign(&ca, Some(Duration::from_secs(30 * 24 * 3600)));
    check_svid_fields(&chain[0], Duration::from_secs(2 * 3600), false);

    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    opts.intermediate_ttl = Duration::from_secs(3600);
    let ca =
        CertificateAuthority::init(&dir.path().join("b"), &opts, IssuePolicy::default()).unwrap();
    let chain = sign(&ca, Some(Duration::from_secs(24 * 3600)));
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert!(leaf.validity().not_after.to_datetime() <= ca.signer_not_after());
}

#[test]
fn plugged_in_rsa_ca_from_cacerts_files_signs_verifiable_svids() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    std::fs::create_dir_all(&ca_dir).unwrap();
    // An organisation's own root, made by openssl (PKCS#8 RSA 2048 key).
    let (ok, out) = common::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/O=Example Corp/CN=Example Root",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(ca_dir.join("ca-key.pem"))
            .arg("-out")
            .arg(ca_dir.join("ca-cert.pem")),
    );
    assert!(ok, "openssl: {out}");
    std::fs::copy(ca_dir.join("ca-cert.pem"), ca_dir.join("root-cert.pem")).unwrap();
    std::fs::copy(ca_dir.join("ca-cert.pem"), ca_dir.join("cert-chain.pem")).unwrap();
    let ca =
        CertificateAuthority::load(&ca_dir, Some("cluster.local"), IssuePolicy::default()).unwrap();
    let chain = sign(&ca, None);
    let (ok, out) = common::openssl_verify(
        dir.path(),
        &ca.trust_bundle().pem(),
        &chain[1..].concat(),
        &chain[0],
    );
    assert!(ok, "openssl verify: {out}");
    // An RSA workload key gets keyEncipherment too.
    let csr = verify_csr_pem(&common::openssl_rsa_csr(
        dir.path(),
        2048,
        &[&id().to_string()],
    ))
    .unwrap();
    let chain = ca.sign_csr(&csr, None).unwrap().chain_pem;
    check_svid_fields(&chain[0], Duration::from_secs(24 * 3600), true);
    // rotate-root refuses: the CA has no root key.
    let err = CertificateAuthority::rotate_root(&ca_dir, IssuePolicy::default()).unwrap_err();
    assert!(err.to_string().contains("plugged-in"), "{err}");
}

#[test]
fn loading_refuses_a_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    CertificateAuthority::init(
        &a,
        &InitOptions::new("cluster.local"),
        IssuePolicy::default(),
    )
    .unwrap();
    CertificateAuthority::init(
        &b,
        &InitOptions::new("cluster.local"),
        IssuePolicy::default(),
    )
    .unwrap();
    std::fs::copy(b.join("ca-key.pem"), a.join("ca-key.pem")).unwrap();
    let err = CertificateAuthority::load(&a, None, IssuePolicy::default()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn root_rotation_keeps_old_and_new_svids_verifiable_with_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    let old = CertificateAuthority::init(&ca_dir, &opts, IssuePolicy::default()).unwrap();
    let old_chain = sign(&old, None);
    let new = CertificateAuthority::rotate_root(&ca_dir, IssuePolicy::default()).unwrap();
    assert_eq!(new.trust_bundle().roots().len(), 2);
    let new_chain = sign(&new, None);
    assert_ne!(
        old_chain.last(),
        new_chain.last(),
        "new SVIDs chain to the new root"
    );
    let bundle = new.trust_bundle().pem();
    for chain in [&old_chain, &new_chain] {
        let (ok, out) =
            common::openssl_verify(dir.path(), &bundle, &chain[1..].concat(), &chain[0]);
        assert!(ok, "openssl verify: {out}");
    }
    // The rotation state persists: a reload still trusts both roots.
    let reloaded = CertificateAuthority::load(&ca_dir, None, IssuePolicy::default()).unwrap();
    assert_eq!(reloaded.trust_bundle().roots().len(), 2);
    let spiffe: serde_json::Value =
        serde_json::from_str(&reloaded.trust_bundle().spiffe_json()).unwrap();
    assert_eq!(spiffe["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn csr_for_another_trust_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        dir.path(),
        &InitOptions::new("cluster.local"),
        IssuePolicy::default(),
    )
    .unwrap();
    let other: SpiffeId = "spiffe://other.domain/ns/a/sa/b".parse().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = verify_csr_pem(&build_csr_pem(&other, &key).unwrap()).unwrap();
    let err = ca.sign_csr(&csr, None).unwrap_err();
    assert!(err.to_string().contains("trust domain"), "{err}");
}

#[test]
fn rsa_1024_csr_is_refused_as_weak() {
    let dir = tempfile::tempdir().unwrap();
    let pem = common::openssl_rsa_csr(dir.path(), 1024, &[&id().to_string()]);
    let err = verify_csr_pem(&pem).unwrap_err();
    assert!(err.to_string().contains("RSA 1024 bits"), "{err}");
}

#[test]
fn rsa_2048_root_from_init_signs_svids_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = InitOptions::new("cluster.local");
    opts.key_algorithm = mesh_ca::KeyAlgorithm::Rsa2048;
    let started = std::time::Instant::now();
    let ca =
        CertificateAuthority::init(&dir.path().join("ca"), &opts, IssuePolicy::default()).unwrap();
    eprintln!("RSA 2048 root generated in {:?}", started.elapsed());
    let root = der(&ca.trust_bundle().pem());
    let (_, root_cert) = X509Certificate::from_der(&root).unwrap();
    assert_eq!(root_cert.public_key().parsed().unwrap().key_size(), 2048);
    let chain = sign(&ca, None);
    let (ok, out) = common::openssl_verify(
        dir.path(),
        &ca.trust_bundle().pem(),
        &chain[1..].concat(),
        &chain[0],
    );
    assert!(ok, "openssl verify: {out}");
    let spiffe: serde_json::Value = serde_json::from_str(&ca.trust_bundle().spiffe_json()).unwrap();
    assert_eq!(spiffe["keys"][0]["kty"], "RSA");
}

/// Runs `openssl req -new` with extra key arguments and returns the CSR.
fn openssl_csr(dir: &std::path::Path, name: &str, key_args: &[&str]) -> String {
    let csr = dir.join(format!("{name}.csr"));
    let (ok, out) = common::run(
        Command::new("openssl")
            .args(["req", "-new"])
            .args(key_args)
            .args(["-nodes", "-subj", "/O=test", "-keyout"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&csr)
            .arg("-addext")
            .arg(format!("subjectAltName=URI:{}", id())),
    );
    assert!(ok, "openssl req: {out}");
    std::fs::read_to_string(csr).unwrap()
}

#[test]
fn csr_with_an_unknown_curve_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_csr(
        dir.path(),
        "k1",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
    );
    let err = verify_csr_pem(&pem).unwrap_err();
    assert!(err.to_string().contains("EC curve 1.3.132.0.10"), "{err}");
}

#[test]
fn csr_signed_with_sha1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_csr(dir.path(), "sha1", &["-newkey", "rsa:2048", "-sha1"]);
    let err = verify_csr_pem(&pem).unwrap_err();
    assert!(
        err.to_string()
            .contains("signature algorithm 1.2.840.113549.1.1.5"),
        "{err}"
    );
}

#[test]
fn ed25519_and_p384_csrs_from_openssl_are_signed_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        &dir.path().join("ca"),
        &InitOptions::new("cluster.local"),
        IssuePolicy::default(),
    )
    .unwrap();
    for (name, args) in [
        ("ed", vec!["-newkey", "ed25519"]),
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
    ] {
        let pem = openssl_csr(dir.path(), name, &args);
        let csr = verify_csr_pem(&pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(csr.spiffe_id, id());
        let chain = ca.sign_csr(&csr, None).unwrap().chain_pem;
        let (ok, out) = common::openssl_verify(
            dir.path(),
            &ca.trust_bundle().pem(),
            &chain[1..].concat(),
            &chain[0],
        );
        assert!(ok, "{name}: openssl verify: {out}");
    }
}
