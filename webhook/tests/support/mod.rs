//! A webhook server on 127.0.0.1:0 with a certificate from a throw-away CA,
//! and an HTTPS client trusting that CA.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_webhook::WebhookState;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// The DNS name meshd's serving certificate carries.
pub const SERVICE_NAME: &str = "meshd.mesh-system.svc";

/// A running webhook server.
pub struct Server {
    pub addr: SocketAddr,
    ca: CertificateDer<'static>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Which HTTP version the client offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Server {
    pub async fn start() -> anyhow::Result<Server> {
        Server::start_with(WebhookState::default()).await
    }

    pub async fn start_with(state: WebhookState) -> anyhow::Result<Server> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec![SERVICE_NAME.to_string()])?
            .signed_by(&leaf_key, &issuer)?;
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let tls =
            mesh_webhook::server_config(chain.as_bytes(), leaf_key.serialize_pem().as_bytes())?;

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(mesh_webhook::serve(listener, tls, state, async move {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            ca: ca_cert.der().clone(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Sends `method path` with `body` and returns the status and body.
    pub async fn request(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request_with(proto, method, path, Full::new(Bytes::from(body)))
            .await
    }

    /// Sends `method path` with any body (e.g. one without a length).
    pub async fn request_with<B>(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        body: B,
    ) -> anyhow::Result<(StatusCode, Bytes)>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![match proto {
            Proto::Http1 => b"http/1.1".to_vec(),
            Proto::Http2 => b"h2".to_vec(),
        }];
        let tcp = TcpStream::connect(self.addr).await?;
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(SERVICE_NAME)?, tcp)
            .await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{SERVICE_NAME}{path}"))
            .header("content-type", "application/json")
            .body(body)?;
        let io = TokioIo::new(tls);
        let res = match proto {
            Proto::Http1 => {
                anyhow::ensure!(negotiated.as_deref() == Some(b"http/1.1".as_slice()));
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
            Proto::Http2 => {
                anyhow::ensure!(negotiated.as_deref() == Some(b"h2".as_slice()));
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
        };
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// POSTs an AdmissionReview and returns the `response` of the answer.
    pub async fn review(&self, path: &str, review: &Value) -> anyhow::Result<Value> {
        let (status, body) = self
            .request(Proto::Http1, "POST", path, serde_json::to_vec(review)?)
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer: Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(
            answer["kind"] == "AdmissionReview",
            "not a review: {answer}"
        );
        anyhow::ensure!(
            answer["apiVersion"] == "admission.k8s.io/v1",
            "wrong apiVersion: {answer}"
        );
        Ok(answer["response"].clone())
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await?;
        }
        Ok(())
    }
}

/// Reads a fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> anyhow::Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// A body of `chunks` MiB of spaces with no declared length (chunked in
/// HTTP/1.1, no `content-length` in HTTP/2).
#[derive(Debug)]
pub struct UnsizedBody {
    pub chunks: usize,
}

impl Body for UnsizedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks == 0 {
            return Poll::Ready(None);
        }
        self.chunks -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 1 << 20])))))
    }
}
