//! Upstream HTTP clients: pooled HTTP/1.1 connections per cluster endpoint,
//! plain or mTLS (`send_h1_pooled`), dedicated connections for upgrades,
//! and the HTTP/2 pool (`h2`), plain or mTLS.

mod h2;

pub use h2::{H2Limits, H2Pool, H2Target};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::flags::ProxyBody;
use crate::config::{Cluster, TcpKeepalive};

/// A pooled HTTP/1.1 connection: its sender, when it was opened, when it
/// last went back to the pool, how many requests it carried and how long
/// it may stay unused (its cluster's idle timeout).
#[derive(Debug)]
struct Pooled {
    sender: SendRequest<ProxyBody>,
    opened: tokio::time::Instant,
    pooled: tokio::time::Instant,
    requests: u32,
    idle_timeout: Duration,
}

impl Pooled {
    /// Whether the connection is closed or unused past its idle timeout.
    fn expired(&self, now: tokio::time::Instant) -> bool {
        self.sender.is_closed() || now.saturating_duration_since(self.pooled) >= self.idle_timeout
    }
}

/// Envoy's default upstream idle timeout: a pooled connection unused for
/// longer is closed instead of reused.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

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
    /// Idle time after which a pooled connection is dropped (HTTP/1.1:
    /// an hour when unset, as Envoy).
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

/// Idle HTTP/1.1 connections by cluster, then endpoint (two levels, so that
/// a request finds its list by the borrowed cluster name, without copying
/// it).
type Idle = HashMap<String, HashMap<std::net::SocketAddr, Vec<Pooled>>>;

/// The idle list of `cluster`'s endpoint `target`, created empty.
fn idle_list<'a>(
    pool: &'a mut Idle,
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

/// Most idle HTTP/1.1 connections kept per cluster endpoint.
const MAX_IDLE: usize = 32;

/// How often the whole pool is swept for closed and idle-expired
/// connections (those of endpoints no request goes to any more are never
/// looked at otherwise).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The idle HTTP/1.1 connections: plain ones at index 0, mTLS at 1 (a
/// cluster whose TLS setting changes never gets the other kind), and when
/// they were last swept.
#[derive(Debug, Default)]
struct IdlePools {
    kinds: [Idle; 2],
    swept: Option<tokio::time::Instant>,
}

impl IdlePools {
    /// Sweeps when the last sweep is [`SWEEP_EVERY`] old.
    fn sweep_if_due(&mut self, now: tokio::time::Instant) {
        if self
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.sweep(now);
        }
    }

    /// Drops closed and idle-expired connections (dropping the last sender
    /// closes a connection once its response is read), then the endpoints
    /// and clusters left without any.
    fn sweep(&mut self, now: tokio::time::Instant) {
        for pool in &mut self.kinds {
            for endpoints in pool.values_mut() {
                for list in endpoints.values_mut() {
                    list.retain(|p| !p.expired(now));
                }
                endpoints.retain(|_, list| !list.is_empty());
            }
            pool.retain(|_, endpoints| !endpoints.is_empty());
        }
        self.swept = Some(now);
    }

    /// How many connections the pool holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kinds
            .iter()
            .flat_map(|pool| pool.values())
            .flat_map(|endpoints| endpoints.values())
            .map(Vec::len)
            .sum()
    }
}

/// Pooled upstream connections.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// Idle HTTP/1.1 connections.
    idle: Mutex<IdlePools>,
    /// HTTP/2 connections (plain and mTLS) and pending requests.
    pub h2: H2Pool,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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
        matches!(self, Self::Connect(_))
    }

    /// Whether the request was refused by a circuit breaker (`UO`).
    pub fn is_overflow(&self) -> bool {
        matches!(self, Self::Overflow)
    }
}

impl Upstreams {
    /// Sends an HTTP/1.1 request over a pooled connection to `target`
    /// (mutual TLS when `tls` is set), opening one when no idle connection
    /// is at hand. A connection goes back to the pool as soon as the request
    /// is sent; it is reused once its response has been read (`is_ready`).
    /// A connection past the cluster's `max_requests_per_connection` or
    /// `max_connection_duration` is retired instead of reused, one idle past
    /// the cluster's idle timeout (an hour by default, as Envoy) is closed.
    ///
    /// A request that a reused connection hands back unsent (the upstream
    /// closed it just as the request was queued) goes once more, over a new
    /// connection: it never reached the upstream, so this is safe for any
    /// method.
    pub async fn send_h1_pooled(
        &self,
        cluster: &str,
        req: http::Request<ProxyBody>,
        target: std::net::SocketAddr,
        opts: ConnOptions,
        tls: Option<&crate::config::UpstreamTls>,
        svid: &crate::tls::SvidReceiver,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let kind = usize::from(tls.is_some());
        let mut req = origin_form(req);
        let mut reuse = true;
        loop {
            let now = tokio::time::Instant::now();
            let idle = if reuse {
                self.take_idle(kind, cluster, target, &opts, now)
            } else {
                None
            };
            let reused = idle.is_some();
            let mut conn = match idle {
                Some(p) => p,
                None => Pooled {
                    sender: open_h1(target, &opts, tls, svid).await?,
                    opened: now,
                    pooled: now,
                    requests: 0,
                    idle_timeout: opts.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
                },
            };
            let fut = conn.sender.try_send_request(req);
            conn.requests += 1;
            // A retired connection is dropped here: it closes once its last
            // response is read.
            if opts.reusable(conn.opened, conn.requests, now) {
                conn.pooled = now;
                let mut pools = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let list = idle_list(&mut pools.kinds[kind], cluster, target);
                if list.len() < MAX_IDLE {
                    list.push(conn);
                }
            }
            match fut.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        reuse = false;
                    }
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// An idle connection of the given kind to `target` that may take a
    /// request now; closed, retired and idle-expired ones are dropped (and,
    /// every [`SWEEP_EVERY`], those of every other endpoint).
    fn take_idle(
        &self,
        kind: usize,
        cluster: &str,
        target: std::net::SocketAddr,
        opts: &ConnOptions,
        now: tokio::time::Instant,
    ) -> Option<Pooled> {
        let mut pools = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        pools.sweep_if_due(now);
        let list = idle_list(&mut pools.kinds[kind], cluster, target);
        list.retain(|p| !p.expired(now) && opts.reusable(p.opened, p.requests, now));
        list.iter()
            .position(|p| p.sender.is_ready())
            .map(|i| list.swap_remove(i))
    }
}

/// Opens an HTTP/1.1 connection to `target`, mutual TLS when `tls` is set.
async fn open_h1(
    target: std::net::SocketAddr,
    opts: &ConnOptions,
    tls: Option<&crate::config::UpstreamTls>,
    svid: &crate::tls::SvidReceiver,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let tcp = connect_tcp(target, opts).await?;
    let Some(tls) = tls else {
        return handshake_h1(tcp).await;
    };
    let stream = crate::tls::connect(tcp, svid, tls, crate::tls::Carrying::Http1)
        .await
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
    handshake_h1(stream).await
}

/// The HTTP/1.1 handshake over `stream`; the connection runs on its own
/// task until it closes.
async fn handshake_h1<S>(stream: S) -> Result<SendRequest<ProxyBody>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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

    /// A plain HTTP/1.1 server on a thread: every connection answers each
    /// request with the connection's number (from 1). With `hold_first`, the
    /// first connection waits after its first answer until `close` is
    /// signalled, then writes a byte to `hold_first`, closes, and says so on
    /// the returned receiver.
    fn numbered_server(
        hold_first: Option<std::os::unix::net::UnixStream>,
    ) -> (
        std::net::SocketAddr,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    ) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut close = Some((close_rx, closed_tx));
            let mut hold_first = hold_first;
            for (n, conn) in (1..).zip(l.incoming()) {
                let Ok(mut conn) = conn else { return };
                let first = if n == 1 {
                    hold_first.take().zip(close.take())
                } else {
                    None
                };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        buf.clear();
                        let body = n.to_string();
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if conn.write_all(format!("{head}{body}").as_bytes()).is_err() {
                            return;
                        }
                        if let Some((mut signal, (close_rx, closed_tx))) = first {
                            let _ = close_rx.recv();
                            let _ = signal.write_all(b"x");
                            drop(conn);
                            let _ = closed_tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        (addr, close_tx, closed_rx)
    }

    async fn get_number(
        up: &Upstreams,
        addr: std::net::SocketAddr,
        opts: ConnOptions,
    ) -> Result<String, UpstreamError> {
        use http_body_util::BodyExt;
        let req = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, "numbers")
            .body(super::super::forward::empty_body())
            .unwrap();
        let svid = crate::tls::no_svid();
        let resp = up
            .send_h1_pooled("numbers", req, addr, opts, None, &svid)
            .await?;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        // Let the connection task see the end of the response.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    fn opts(idle_timeout: Option<Duration>) -> ConnOptions {
        ConnOptions {
            connect_timeout: Duration::from_secs(5),
            idle_timeout,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn plain_connections_are_reused_until_idle_past_the_timeout() {
        let (addr, _close, _closed) = numbered_server(None);
        let up = Upstreams::default();
        let o = opts(Some(Duration::from_millis(150)));
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(get_number(&up, addr, o).await.unwrap());
        }
        assert_eq!(seen, ["1", "1", "1"], "one pooled connection");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            get_number(&up, addr, o).await.unwrap(),
            "2",
            "idle past the timeout: a new connection"
        );
        assert_eq!(get_number(&up, addr, o).await.unwrap(), "2");
    }

    #[tokio::test]
    async fn a_sweep_drops_idle_expired_connections_of_endpoints_no_longer_used() {
        let (addr, _close, _closed) = numbered_server(None);
        let up = Upstreams::default();
        assert_eq!(
            get_number(&up, addr, opts(Some(Duration::from_millis(100))))
                .await
                .unwrap(),
            "1"
        );
        let lock = || up.idle.lock().unwrap();
        let now = tokio::time::Instant::now();
        lock().sweep(now);
        assert_eq!(lock().len(), 1, "not yet idle past its timeout");
        lock().sweep(now + Duration::from_millis(150));
        assert_eq!(lock().len(), 0);
        assert!(
            lock().kinds[0].is_empty(),
            "no empty cluster or endpoint entries left"
        );
        // Due once SWEEP_EVERY has passed since the last sweep.
        let mut pools = IdlePools::default();
        pools.sweep_if_due(now);
        assert_eq!(pools.swept, Some(now));
        pools.sweep_if_due(now + Duration::from_secs(29));
        assert_eq!(pools.swept, Some(now));
        pools.sweep_if_due(now + SWEEP_EVERY);
        assert_eq!(pools.swept, Some(now + SWEEP_EVERY));
    }

    #[tokio::test]
    async fn a_request_handed_back_by_a_closing_pooled_connection_goes_over_a_new_one() {
        let (signal, waiter) = std::os::unix::net::UnixStream::pair().unwrap();
        let (addr, close, closed) = numbered_server(Some(signal));
        waiter.set_nonblocking(true).unwrap();
        let waiter = tokio::net::UnixStream::from_std(waiter).unwrap();
        let up = Upstreams::default();
        let o = opts(None);
        assert_eq!(get_number(&up, addr, o).await.unwrap(), "1");
        // The upstream signals, then closes the pooled connection, while
        // this task blocks the (current-thread) runtime. Both events reach
        // the runtime in one poll, the signal first: this task runs before
        // the connection's task has seen the close, queues the request on
        // it, and the connection's task then finds the close before writing
        // and hands the request back.
        close.send(()).unwrap();
        closed.recv().unwrap();
        waiter.readable().await.unwrap();
        assert_eq!(
            get_number(&up, addr, o).await.unwrap(),
            "2",
            "sent again over a new connection"
        );
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
