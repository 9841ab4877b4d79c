//! Mutual TLS with SPIFFE identities. The SVID (certificate chain, key and
//! trust bundle) arrives through a `watch` channel, so the CA client can
//! rotate it: every new handshake reads the current SVID, established
//! connections keep theirs and are never dropped by a rotation.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::config::{DownstreamTls, UpstreamTls};

/// The workload's X.509 SVID and the trust bundle.
#[derive(Debug)]
pub struct Svid {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Trusted roots (two during a root rotation).
    pub roots: Vec<CertificateDer<'static>>,
}

/// Where the current SVID comes from (the CA client's output). `None`
/// until the first certificate is issued.
pub type SvidReceiver = watch::Receiver<Option<Arc<Svid>>>;

/// A receiver that never gets an SVID (no CA configured).
pub fn no_svid() -> SvidReceiver {
    watch::channel(None).1
}

/// Why a TLS handshake could not happen or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No SVID has been issued yet.
    #[error("no SVID yet: the CA client has not issued a certificate")]
    NoSvid,
    /// The SVID or trust bundle was rejected by rustls.
    #[error("invalid SVID or trust bundle")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("invalid trust bundle for client verification")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    /// The peer's SPIFFE ID is not one the config allows.
    #[error("peer identity {got:?} is not one of {want:?}")]
    PeerIdentity {
        /// URI SANs of the peer certificate.
        got: Vec<String>,
        /// Identities allowed.
        want: Vec<String>,
    },
}

/// The URI SANs (SPIFFE IDs) of a certificate.
pub fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn check_identity(
    chain: Option<&[CertificateDer<'_>]>,
    want: &[String],
) -> Result<Option<String>, TlsError> {
    let got = chain
        .and_then(|c| c.first())
        .map(uri_sans)
        .unwrap_or_default();
    if !want.is_empty() && !got.iter().any(|g| want.contains(g)) {
        return Err(TlsError::PeerIdentity {
            got,
            want: want.to_vec(),
        });
    }
    Ok(got.into_iter().next())
}

fn roots(svid: &Svid) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for r in &svid.roots {
        store.add(r.clone()).map_err(TlsError::Config)?;
    }
    Ok(Arc::new(store))
}

fn current(rx: &SvidReceiver) -> Result<Arc<Svid>, TlsError> {
    rx.borrow().clone().ok_or(TlsError::NoSvid)
}

/// Server config for an inbound chain.
pub fn server_config(svid: &Svid, tls: &DownstreamTls) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder(roots(svid)?);
    let verifier = if tls.require_client_certificate {
        verifier
    } else {
        verifier.allow_unauthenticated()
    };
    let mut cfg = ServerConfig::builder()
        .with_client_cert_verifier(verifier.build().map_err(TlsError::Verifier)?)
        .with_single_cert(svid.chain.clone(), svid.key.clone_key())
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = tls.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Verifies a server certificate against the trust bundle and the expected
/// SPIFFE IDs, ignoring DNS names (SPIFFE identities live in URI SANs).
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        check_identity(Some(std::slice::from_ref(end_entity)), &self.expected)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the upstream connection carries, for its ALPN list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrying {
    /// Opaque TCP: the cluster's ALPN list as is (it may offer the TCP
    /// metadata exchange, `istio-peer-exchange`).
    Tcp,
    /// HTTP/1.1 requests.
    Http1,
    /// HTTP/2 requests.
    Http2,
}

/// Client config for a cluster's mTLS origination.
pub fn client_config(svid: &Svid, tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for(svid, tls, Carrying::Tcp)
}

fn client_config_for(
    svid: &Svid,
    tls: &UpstreamTls,
    carrying: Carrying,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SpiffeVerifier {
        roots: roots(svid)?,
        expected: tls.expected_sans.clone(),
        provider: provider.clone(),
    };
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(svid.chain.clone(), svid.key.clone_key())
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = alpn_offered(&tls.alpn, carrying);
    Ok(Arc::new(cfg))
}

/// The ALPN values an upstream connection offers. Opaque TCP offers the
/// cluster's list. HTTP to a mesh cluster (its list names `istio`) offers
/// what Istio's `istio.alpn` filter puts in its place: `istio-http/1.1`,
/// `istio`, `http/1.1` (HTTP/2: `istio-h2`, `istio`, `h2`), so that an
/// Istio sidecar's inbound chains, matched by these values, take the
/// connection as in-mesh HTTP. HTTP never offers `istio-peer-exchange`: the
/// metadata exchange is in-band on TCP only.
fn alpn_offered(cluster: &[String], carrying: Carrying) -> Vec<Vec<u8>> {
    let mesh = cluster.iter().any(|a| a == "istio");
    let list: Vec<&str> = match carrying {
        Carrying::Tcp => cluster.iter().map(String::as_str).collect(),
        Carrying::Http1 if mesh => vec!["istio-http/1.1", "istio", "http/1.1"],
        Carrying::Http2 if mesh => vec!["istio-h2", "istio", "h2"],
        Carrying::Http1 | Carrying::Http2 => cluster
            .iter()
            .map(String::as_str)
            .filter(|a| a.as_bytes() != crate::peer_metadata::tcp::ALPN)
            .collect(),
    };
    list.into_iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Terminates TLS on an inbound connection. Returns the stream and the
/// client's SPIFFE ID, if it sent a certificate.
///
/// ALPN follows Envoy, not rustls: when the client offers protocols none of
/// which the chain lists (a sidecar offers `istio-peer-exchange`, `istio`;
/// Istio's inbound chains list `h2`, `http/1.1`), the handshake goes on
/// without ALPN instead of failing with `no_application_protocol`. So the
/// ClientHello is read first and the config chosen for it.
pub async fn accept<S>(
    stream: S,
    rx: &SvidReceiver,
    tls: &DownstreamTls,
) -> Result<(tokio_rustls::server::TlsStream<S>, Option<String>), TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let svid = current(rx)?;
    let mut cfg = server_config(&svid, tls)?;
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(TlsError::Handshake)?;
    let overlap = start.client_hello().alpn().is_none_or(|mut offered| {
        offered.any(|p| cfg.alpn_protocols.iter().any(|ours| ours.as_slice() == p))
    });
    if !overlap {
        let mut without_alpn = (*cfg).clone();
        without_alpn.alpn_protocols.clear();
        cfg = Arc::new(without_alpn);
    }
    let stream = start.into_stream(cfg).await.map_err(TlsError::Handshake)?;
    let peer = check_identity(stream.get_ref().1.peer_certificates(), &tls.expected_sans)?;
    Ok((stream, peer))
}

/// Originates mTLS toward an upstream, verifying its SPIFFE ID.
pub async fn connect<S>(
    stream: S,
    rx: &SvidReceiver,
    tls: &UpstreamTls,
    carrying: Carrying,
) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let svid = current(rx)?;
    let cfg = client_config_for(&svid, tls, carrying)?;
    // Istio's SNI (`outbound_.9080_._.host`) is not always a valid DNS name
    // for rustls; the verifier ignores the name anyway.
    let name = ServerName::try_from(tls.sni.clone()).unwrap_or_else(|_| {
        ServerName::try_from("mesh.invalid")
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    });
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await
        .map_err(TlsError::Handshake)
}

#[cfg(test)]
mod tests {
    use super::{Carrying, alpn_offered};

    #[test]
    fn http_connections_offer_what_istio_alpn_filter_sets_and_never_the_exchange() {
        let of = |list: &[&str], c| -> Vec<String> {
            let cluster: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            alpn_offered(&cluster, c)
                .into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect()
        };
        let mesh = ["istio-peer-exchange", "istio"];
        assert_eq!(of(&mesh, Carrying::Tcp), mesh);
        assert_eq!(
            of(&mesh, Carrying::Http1),
            ["istio-http/1.1", "istio", "http/1.1"]
        );
        assert_eq!(
            of(&["istio-peer-exchange", "istio", "h2"], Carrying::Http2),
            ["istio-h2", "istio", "h2"]
        );
        // Not a mesh cluster (SIMPLE TLS): its own list.
        assert_eq!(of(&["h2", "http/1.1"], Carrying::Http2), ["h2", "http/1.1"]);
        assert!(of(&["istio-peer-exchange"], Carrying::Http1).is_empty());
    }
}
