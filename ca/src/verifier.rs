//! rustls verifiers for SPIFFE mTLS between workloads: the peer's chain must
//! verify against the trust bundle and its one URI SAN must be an allowed
//! SPIFFE ID. DNS names play no part (SVIDs carry none), which is why the
//! stock WebPKI server verifier cannot be used as is.

use std::sync::Arc;

use mesh_model::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;

/// The SPIFFE ID of a certificate: its one URI SAN, if it has exactly one
/// and it parses as a mesh SPIFFE ID.
pub fn spiffe_id_of_cert(der: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let first = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    first.parse().ok()
}

/// Which peer identities a verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any SPIFFE ID of the bundle's trust domain.
    TrustDomain,
    /// Only these IDs.
    AnyOf(Vec<SpiffeId>),
}

/// Why a peer's SPIFFE ID was refused (carried inside the rustls error).
#[derive(Debug, thiserror::Error)]
pub enum PeerIdError {
    /// The certificate has no usable SPIFFE ID.
    #[error("peer certificate has no single SPIFFE ID URI SAN")]
    Missing,
    /// The SPIFFE ID is not allowed by the policy.
    #[error("peer SPIFFE ID {0} is not allowed")]
    NotAllowed(SpiffeId),
}

fn check_peer(
    der: &CertificateDer<'_>,
    trust_domain: &str,
    policy: &PeerPolicy,
) -> Result<(), rustls::Error> {
    let refuse = |e: PeerIdError| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    };
    let id = spiffe_id_of_cert(der).ok_or_else(|| refuse(PeerIdError::Missing))?;
    let ok = match policy {
        PeerPolicy::TrustDomain => id.trust_domain() == trust_domain,
        PeerPolicy::AnyOf(ids) => ids.contains(&id),
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(PeerIdError::NotAllowed(id)))
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Verifies a server's SVID chain against the trust bundle and its SPIFFE ID
/// against a policy; the server name the client dialled is not checked.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `bundle` and accepting peers allowed by `policy`.
    pub fn new(bundle: &TrustBundle, policy: PeerPolicy) -> Self {
        SpiffeServerVerifier {
            roots: Arc::new(bundle.root_store()),
            trust_domain: bundle.trust_domain().to_string(),
            policy,
            algs: algorithms(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        check_peer(end_entity, &self.trust_domain, &self.policy)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Requires a client SVID that chains to the trust bundle and whose SPIFFE
/// ID the policy allows.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    policy: PeerPolicy,
}

impl SpiffeClientVerifier {
    /// A verifier trusting `bundle` and accepting peers allowed by `policy`.
    pub fn new(bundle: &TrustBundle, policy: PeerPolicy) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(bundle.root_store()),
            provider,
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(SpiffeClientVerifier {
            inner,
            trust_domain: bundle.trust_domain().to_string(),
            policy,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_peer(end_entity, &self.trust_domain, &self.policy)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{CertificateAuthority, InitOptions, IssuePolicy};
    use crate::client::WorkloadCert;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ca() -> (CertificateAuthority, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = InitOptions::new("cluster.local");
        opts.intermediate = true;
        let ca = CertificateAuthority::init(dir.path(), &opts, IssuePolicy::default()).unwrap();
        (ca, dir)
    }

    fn workload(ca: &CertificateAuthority, sa: &str) -> WorkloadCert {
        let id = SpiffeId::new("cluster.local", "default", sa).unwrap();
        let issued = ca.issue_with_new_key(&id, None).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
            .unwrap()
            .secret_der()
            .to_vec();
        WorkloadCert::from_parts(id, &issued.cert.chain_pem, key, ca.trust_bundle().clone())
            .unwrap()
    }

    use rustls::pki_types::pem::PemObject;

    /// Runs an mTLS handshake; Ok when both sides accepted each other.
    async fn handshake(
        client: &WorkloadCert,
        client_accepts: PeerPolicy,
        server: &WorkloadCert,
        server_accepts: PeerPolicy,
    ) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let sc = Arc::new(server.server_config(server_accepts).unwrap());
        let cc = Arc::new(client.client_config(client_accepts).unwrap());
        let srv = tokio::spawn(async move {
            let mut s = tokio_rustls::TlsAcceptor::from(sc)
                .accept(b)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"ok").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
        let name = ServerName::try_from("any.name.works").unwrap();
        let cli = async {
            let mut c = tokio_rustls::TlsConnector::from(cc)
                .connect(name, a)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 2];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let c = cli.await;
        let s = srv.await.unwrap();
        c.and(s)
    }

    #[tokio::test]
    async fn workloads_of_one_trust_domain_complete_mtls() {
        let (ca, _d) = ca();
        let (a, b) = (workload(&ca, "productpage"), workload(&ca, "reviews"));
        let reviews = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
        handshake(
            &a,
            PeerPolicy::AnyOf(vec![reviews]),
            &b,
            PeerPolicy::TrustDomain,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn client_refuses_a_server_whose_spiffe_id_is_not_allowed() {
        let (ca, _d) = ca();
        let (a, b) = (workload(&ca, "productpage"), workload(&ca, "reviews"));
        let ratings = SpiffeId::new("cluster.local", "default", "ratings").unwrap();
        let err = handshake(
            &a,
            PeerPolicy::AnyOf(vec![ratings]),
            &b,
            PeerPolicy::TrustDomain,
        )
        .await
        .unwrap_err();
        assert!(err.contains("NotAllowed"), "{err}");
    }

    #[tokio::test]
    async fn server_refuses_a_client_from_another_ca() {
        let (ca1, _d1) = ca();
        let (ca2, _d2) = ca();
        let (a, b) = (workload(&ca2, "productpage"), workload(&ca1, "reviews"));
        // The client trusts ca2 only, so give it ca1's bundle to reach the
        // server's own check of the client.
        let a = WorkloadCert {
            roots: ca1.trust_bundle().clone(),
            ..a
        };
        assert!(
            handshake(&a, PeerPolicy::TrustDomain, &b, PeerPolicy::TrustDomain)
                .await
                .is_err()
        );
    }

    #[test]
    fn spiffe_id_is_read_from_the_single_uri_san() {
        let (ca, _d) = ca();
        let w = workload(&ca, "reviews");
        assert_eq!(spiffe_id_of_cert(&w.chain[0]), Some(w.spiffe_id.clone()));
        assert_eq!(
            spiffe_id_of_cert(&w.chain[1]),
            None,
            "intermediate has no URI SAN"
        );
    }
}
