//! Upstream HTTP clients: one hyper-util pooled client per cluster (the
//! pool inside is keyed by endpoint address, so connections are pooled per
//! endpoint), rebuilt when the cluster's connection settings change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Cluster, UpstreamProtocol};

/// A pooled HTTP client.
pub type HttpClient = Client<HttpConnector, super::flags::ProxyBody>;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    http2: bool,
}

type Sender = hyper::client::conn::http1::SendRequest<super::flags::ProxyBody>;

/// Most idle mTLS connections kept per cluster endpoint.
const MAX_IDLE_MTLS: usize = 32;

/// Clients by cluster name, and idle mTLS connections by cluster and
/// endpoint.
#[derive(Debug, Default)]
pub struct Upstreams {
    clients: Mutex<HashMap<String, (Settings, HttpClient)>>,
    mtls_idle: Mutex<HashMap<(String, std::net::SocketAddr), Vec<Sender>>>,
}

impl Upstreams {
    /// The client for `cluster`; `downstream_h2` decides the protocol for
    /// clusters that follow the downstream one.
    pub fn client(&self, cluster: &Cluster, downstream_h2: bool) -> HttpClient {
        let http2 = match cluster.http.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Downstream => downstream_h2,
        };
        let settings = Settings {
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.http.idle_timeout,
            http2,
        };
        let key = if http2 {
            format!("{}#h2", cluster.name)
        } else {
            cluster.name.clone()
        };
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, c)) = map.get(&key)
            && *s == settings
        {
            return c.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        // Envoy's default upstream idle timeout is one hour.
        builder.pool_idle_timeout(settings.idle_timeout.unwrap_or(Duration::from_secs(3600)));
        builder.http2_only(http2);
        let client = builder.build(connector);
        map.insert(key, (settings, client.clone()));
        client
    }
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The pooled client failed.
    #[error("upstream request failed")]
    Client(#[from] hyper_util::client::legacy::Error),
    /// Connecting (TCP or mTLS) failed.
    #[error("cannot connect upstream")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP exchange failed after connecting.
    #[error("upstream HTTP exchange failed")]
    Http(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether connecting failed (`UF`) rather than the exchange (`UC`).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Client(e) => e.is_connect(),
            Self::Connect(_) => true,
            Self::Http(_) => false,
        }
    }
}

impl Upstreams {
    /// Sends a request over a pooled mTLS connection to `target`, opening
    /// one when no idle connection is at hand. A connection goes back to the
    /// pool as soon as the request is sent; it is reused once its response
    /// has been read (`is_ready`).
    pub async fn send_mtls_pooled(
        &self,
        cluster: &str,
        req: http::Request<super::flags::ProxyBody>,
        target: std::net::SocketAddr,
        connect_timeout: Duration,
        tls: crate::config::UpstreamTls,
        svid: crate::tls::SvidReceiver,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let key = (cluster.to_owned(), target);
        let idle = {
            let mut pool = self.mtls_idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(key.clone()).or_default();
            list.retain(|s| !s.is_closed());
            list.iter()
                .position(|s| s.is_ready())
                .map(|i| list.swap_remove(i))
        };
        let mut sender = match idle {
            Some(s) => s,
            None => {
                let tcp =
                    tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target))
                        .await
                        .map_err(|e| UpstreamError::Connect(Box::new(e)))?
                        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
                let _ = tcp.set_nodelay(true);
                let stream = crate::tls::connect(tcp, &svid, &tls)
                    .await
                    .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(UpstreamError::Http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        let fut = sender.send_request(origin_form(req));
        {
            let mut pool = self.mtls_idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(key).or_default();
            if list.len() < MAX_IDLE_MTLS {
                list.push(sender);
            }
        }
        fut.await.map_err(UpstreamError::Http)
    }
}

fn origin_form<B>(req: http::Request<B>) -> http::Request<B> {
    let (mut parts, body) = req.into_parts();
    if let Some(pq) = parts.uri.path_and_query().cloned()
        && let Ok(uri) = pq.as_str().parse()
    {
        parts.uri = uri;
    }
    http::Request::from_parts(parts, body)
}

/// Sends one request over a dedicated connection (mTLS when `tls` is set),
/// with HTTP/1.1 upgrades enabled: used for `Upgrade` requests such as
/// WebSocket, whose connection is handed over to the tunnel.
pub async fn send_dedicated(
    req: http::Request<super::flags::ProxyBody>,
    target: std::net::SocketAddr,
    connect_timeout: Duration,
    tls: Option<crate::config::UpstreamTls>,
    svid: crate::tls::SvidReceiver,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(tls) => {
            let stream = crate::tls::connect(tcp, &svid, &tls)
                .await
                .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
            exchange(stream, req).await
        }
        None => exchange(tcp, req).await,
    }
}

async fn exchange<S>(
    stream: S,
    req: http::Request<super::flags::ProxyBody>,
) -> Result<http::Response<Incoming>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let (mut parts, body) = req.into_parts();
    // Origin-form on the wire, as the pooled client does itself.
    if let Some(pq) = parts.uri.path_and_query().cloned()
        && let Ok(uri) = pq.as_str().parse()
    {
        parts.uri = uri;
    }
    sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(UpstreamError::Http)
}
