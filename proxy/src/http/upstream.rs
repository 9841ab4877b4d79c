//! Upstream HTTP clients: one hyper-util pooled client per cluster (the
//! pool inside is keyed by endpoint address, so connections are pooled per
//! endpoint), rebuilt when the cluster's connection settings change; pooled
//! HTTP/1.1 mTLS connections; and the HTTP/2 pool (`h2`), plain or mTLS.

mod h2;

pub use h2::{H2Limits, H2Pool, H2Target};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Cluster, TcpKeepalive, UpstreamProtocol};

/// A pooled HTTP client.
pub type HttpClient = Client<HttpConnector, super::flags::ProxyBody>;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    http2: bool,
    keepalive: Option<TcpKeepalive>,
}

/// Linux's default idle time before keepalive probes, used when a cluster
/// turns keepalive on without a time.
const DEFAULT_KEEPALIVE_TIME: Duration = Duration::from_secs(7200);

/// An mTLS connection in the pool: its sender, when it was opened and how
/// many requests it carried.
#[derive(Debug)]
struct Pooled {
    sender: hyper::client::conn::http1::SendRequest<super::flags::ProxyBody>,
    opened: tokio::time::Instant,
    requests: u32,
}

/// Per-connection limits and socket options of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnOptions {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// TCP keepalive.
    pub keepalive: Option<TcpKeepalive>,
    /// Requests before a connection is retired.
    pub max_requests: Option<u32>,
    /// Age after which a connection takes no new request.
    pub max_age: Option<Duration>,
    /// Idle time after which a pooled HTTP/2 connection is dropped.
    pub idle_timeout: Option<Duration>,
}

impl ConnOptions {
    /// The options of `cluster`.
    pub fn of(cluster: &Cluster) -> Self {
        Self {
            connect_timeout: cluster.connect_timeout,
            keepalive: cluster.tcp_keepalive,
            max_requests: cluster.http.max_requests_per_connection,
            max_age: cluster.http.max_connection_duration,
            idle_timeout: cluster.http.idle_timeout,
        }
    }

    /// Whether a connection opened at `opened` that carried `requests` may
    /// take another request at `now`.
    pub fn reusable(
        &self,
        opened: tokio::time::Instant,
        requests: u32,
        now: tokio::time::Instant,
    ) -> bool {
        self.max_requests.is_none_or(|m| requests < m)
            && self
                .max_age
                .is_none_or(|age| now.saturating_duration_since(opened) < age)
    }
}

/// Turns TCP keepalive on for `tcp` with the given probe settings (unset
/// ones keep the kernel's).
pub fn set_keepalive(tcp: &tokio::net::TcpStream, ka: &TcpKeepalive) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(tcp, sockopt::KeepAlive, &true)?;
    if let Some(t) = ka.time {
        setsockopt(tcp, sockopt::TcpKeepIdle, &t)?;
    }
    if let Some(i) = ka.interval {
        setsockopt(tcp, sockopt::TcpKeepInterval, &i)?;
    }
    if let Some(p) = ka.probes {
        setsockopt(tcp, sockopt::TcpKeepCount, &p)?;
    }
    Ok(())
}

/// Connects to `target` within the timeout, with nodelay and keepalive.
async fn connect_tcp(
    target: std::net::SocketAddr,
    opts: &ConnOptions,
) -> Result<tokio::net::TcpStream, UpstreamError> {
    let tcp = tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
    let _ = tcp.set_nodelay(true);
    if let Some(ka) = &opts.keepalive
        && let Err(error) = set_keepalive(&tcp, ka)
    {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
    Ok(tcp)
}

/// Idle mTLS connections by cluster, then endpoint (two levels, so that a
/// request finds its list by the borrowed cluster name, without copying it).
type IdleMtls = HashMap<String, HashMap<std::net::SocketAddr, Vec<Pooled>>>;

/// The idle list of `cluster`'s endpoint `target`, created empty.
fn idle_list<'a>(
    pool: &'a mut IdleMtls,
    cluster: &str,
    target: std::net::SocketAddr,
) -> &'a mut Vec<Pooled> {
    if !pool.contains_key(cluster) {
        pool.insert(cluster.to_owned(), HashMap::new());
    }
    pool.get_mut(cluster)
        .expect("the cluster's map was just inserted")
        .entry(target)
        .or_default()
}

/// Most idle mTLS connections kept per cluster endpoint.
const MAX_IDLE_MTLS: usize = 32;

/// Clients by cluster name, and idle mTLS connections by cluster and
/// endpoint.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// By cluster name: HTTP/1.1 clients at index 0, HTTP/2 at 1.
    clients: Mutex<[HashMap<String, (Settings, HttpClient)>; 2]>,
    mtls_idle: Mutex<IdleMtls>,
    /// HTTP/2 connections (plain and mTLS) and pending requests.
    pub h2: H2Pool,
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
            keepalive: cluster.tcp_keepalive,
        };
        let mut maps = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let map = &mut maps[usize::from(http2)];
        if let Some((s, c)) = map.get(cluster.name.as_str())
            && *s == settings
        {
            return c.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        if let Some(ka) = settings.keepalive {
            connector.set_keepalive(Some(
                ka.time
                    .map_or(DEFAULT_KEEPALIVE_TIME, |t| Duration::from_secs(t.into())),
            ));
            connector.set_keepalive_interval(ka.interval.map(|i| Duration::from_secs(i.into())));
            connector.set_keepalive_retries(ka.probes);
        }
        let mut builder = Client::builder(TokioExecutor::new());
        // Envoy's default upstream idle timeout is one hour.
        builder.pool_idle_timeout(settings.idle_timeout.unwrap_or(Duration::from_secs(3600)));
        builder.http2_only(http2);
        let client = builder.build(connector);
        map.insert(cluster.name.clone(), (settings, client.clone()));
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
    /// The request would wait for an HTTP/2 connection beyond the
    /// cluster's `max_pending_requests` (`UO`).
    #[error("upstream pending request overflow")]
    Overflow,
}

impl UpstreamError {
    /// Whether connecting failed (`UF`) rather than the exchange (`UC`).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Client(e) => e.is_connect(),
            Self::Connect(_) => true,
            Self::Http(_) | Self::Overflow => false,
        }
    }

    /// Whether the request was refused by a circuit breaker (`UO`).
    pub fn is_overflow(&self) -> bool {
        matches!(self, Self::Overflow)
    }
}

impl Upstreams {
    /// Sends a request over a pooled mTLS connection to `target`, opening
    /// one when no idle connection is at hand. A connection goes back to the
    /// pool as soon as the request is sent; it is reused once its response
    /// has been read (`is_ready`). A connection past the cluster's
    /// `max_requests_per_connection` or `max_connection_duration` is
    /// retired instead of reused.
    pub async fn send_mtls_pooled(
        &self,
        cluster: &str,
        req: http::Request<super::flags::ProxyBody>,
        target: std::net::SocketAddr,
        opts: ConnOptions,
        tls: &crate::config::UpstreamTls,
        svid: &crate::tls::SvidReceiver,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let now = tokio::time::Instant::now();
        let idle = {
            let mut pool = self.mtls_idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle_list(&mut pool, cluster, target);
            list.retain(|p| !p.sender.is_closed() && opts.reusable(p.opened, p.requests, now));
            list.iter()
                .position(|p| p.sender.is_ready())
                .map(|i| list.swap_remove(i))
        };
        let mut conn = match idle {
            Some(p) => p,
            None => {
                let tcp = connect_tcp(target, &opts).await?;
                let stream = crate::tls::connect(tcp, svid, tls, crate::tls::Carrying::Http1)
                    .await
                    .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(UpstreamError::Http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Pooled {
                    sender,
                    opened: now,
                    requests: 0,
                }
            }
        };
        let fut = conn.sender.send_request(origin_form(req));
        conn.requests += 1;
        // A retired connection is dropped here: it closes once its last
        // response is read.
        if opts.reusable(conn.opened, conn.requests, now) {
            let mut pool = self.mtls_idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle_list(&mut pool, cluster, target);
            if list.len() < MAX_IDLE_MTLS {
                list.push(conn);
            }
        }
        fut.await.map_err(UpstreamError::Http)
    }
}

fn origin_form<B>(req: http::Request<B>) -> http::Request<B> {
    if req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return req;
    }
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
    opts: ConnOptions,
    tls: Option<crate::config::UpstreamTls>,
    svid: crate::tls::SvidReceiver,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let tcp = connect_tcp(target, &opts).await?;
    match tls {
        Some(tls) => {
            let stream = crate::tls::connect(tcp, &svid, &tls, crate::tls::Carrying::Http1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_settings_reach_the_socket() {
        use nix::sys::socket::{getsockopt, sockopt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = ConnOptions {
            connect_timeout: Duration::from_secs(1),
            keepalive: Some(TcpKeepalive {
                probes: Some(4),
                time: Some(30),
                interval: Some(5),
            }),
            ..Default::default()
        };
        let tcp = connect_tcp(l.local_addr().unwrap(), &opts).await.unwrap();
        assert!(getsockopt(&tcp, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&tcp, sockopt::TcpKeepIdle).unwrap(), 30);
        assert_eq!(getsockopt(&tcp, sockopt::TcpKeepInterval).unwrap(), 5);
        assert_eq!(getsockopt(&tcp, sockopt::TcpKeepCount).unwrap(), 4);
        let plain = connect_tcp(
            l.local_addr().unwrap(),
            &ConnOptions {
                connect_timeout: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(!getsockopt(&plain, sockopt::KeepAlive).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_retire_after_max_requests_or_max_duration() {
        let opts = ConnOptions {
            max_requests: Some(3),
            max_age: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let opened = tokio::time::Instant::now();
        assert!(opts.reusable(opened, 2, opened));
        assert!(
            !opts.reusable(opened, 3, opened),
            "third request was the last"
        );
        let later = opened + Duration::from_secs(61);
        assert!(!opts.reusable(opened, 0, later), "too old");
        assert!(ConnOptions::default().reusable(opened, 1_000_000, later));
    }
}
