//! HTTP/2 upstream connections (plain or mTLS), as Envoy's h2 pool: per
//! cluster endpoint one connection multiplexes the requests; another opens
//! when it carries `max_concurrent_streams` streams, when it reached
//! `max_requests_per_connection` or `max_connection_duration` (it is
//! rotated: it finishes its streams and closes), or when it went away
//! (GOAWAY, reset, error). One connect runs at a time per endpoint, in its
//! own task; the requests that wait for it are the cluster's pending
//! requests (`max_pending_requests`, then `UO`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::header::{CONNECTION, HOST, TE};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ConnOptions, UpstreamError, connect_tcp};
use crate::config::UpstreamTls;
use crate::http::flags::ProxyBody;
use crate::lb::pool::{PendingRequests, PendingSlot};
use crate::tls::SvidReceiver;

/// Headers that name a property of one HTTP/1.1 connection and may not
/// appear in HTTP/2 (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Per-cluster limits of the h2 pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct H2Limits {
    /// Streams a connection carries at once before another opens
    /// (`http2_protocol_options.max_concurrent_streams`).
    pub max_concurrent_streams: Option<u32>,
    /// Requests that may wait for a connection being established
    /// (`circuit_breakers.max_pending_requests`).
    pub max_pending_requests: Option<u32>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct H2Target {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Connection options of the cluster.
    pub opts: ConnOptions,
    /// mTLS origination, if the cluster has a transport socket.
    pub tls: Option<UpstreamTls>,
    /// The SVID source for mTLS.
    pub svid: SvidReceiver,
}

#[derive(Debug)]
struct Conn {
    sender: SendRequest<ProxyBody>,
    opened: Instant,
    last_used: Instant,
    /// Streams opened on it so far.
    streams: u32,
    /// Streams waiting for their response headers.
    active: Arc<AtomicU32>,
}

#[derive(Debug, Default)]
struct EndpointState {
    conns: Vec<Conn>,
    connecting: bool,
    /// Bumped when a connect attempt ends.
    attempt: u64,
    /// The attempt that failed last, and why.
    failed: Option<(u64, String)>,
}

#[derive(Debug, Default)]
struct Endpoint {
    state: Mutex<EndpointState>,
    settled: Notify,
}

impl Endpoint {
    fn lock(&self) -> MutexGuard<'_, EndpointState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connections by cluster and endpoint, and pending requests by cluster.
#[derive(Debug, Default)]
pub struct H2Pool {
    endpoints: Mutex<HashMap<(String, SocketAddr), Arc<Endpoint>>>,
    pending: Mutex<HashMap<String, Arc<PendingRequests>>>,
}

/// Counts a stream as active on its connection until dropped.
struct Active(Arc<AtomicU32>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Next {
    Send(SendRequest<ProxyBody>, Active),
    Wait(u64),
}

impl H2Pool {
    fn endpoint(&self, cluster: &str, addr: SocketAddr) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((cluster.to_owned(), addr)).or_default().clone()
    }

    /// The pending-request count of `cluster`.
    pub fn pending(&self, cluster: &str) -> Arc<PendingRequests> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(cluster.to_owned()).or_default().clone()
    }

    /// Open connections to `addr` for `cluster` that take new streams.
    pub fn connections(&self, cluster: &str, addr: SocketAddr) -> usize {
        let ep = self.endpoint(cluster, addr);
        let st = ep.lock();
        st.conns.iter().filter(|c| !c.sender.is_closed()).count()
    }

    /// Sends `req` as HTTP/2 to `target` over a pooled connection, opening
    /// one if none can take the stream. `UpstreamError::Overflow` when the
    /// request would wait for a connection beyond `max_pending_requests`.
    pub async fn send(
        &self,
        cluster: &str,
        req: Request<ProxyBody>,
        target: H2Target,
        limits: H2Limits,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let ep = self.endpoint(cluster, target.addr);
        let mut req = to_h2(req, target.addr);
        let mut pending: Option<PendingSlot> = None;
        loop {
            let settled = ep.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let next = {
                let mut st = ep.lock();
                match pick(&mut st, &target.opts, &limits) {
                    Some(next) => next,
                    None => {
                        if pending.is_none() {
                            pending = Some(
                                self.pending(cluster)
                                    .enter(limits.max_pending_requests)
                                    .ok_or(UpstreamError::Overflow)?,
                            );
                        }
                        if !st.connecting {
                            st.connecting = true;
                            tokio::spawn(connect(ep.clone(), target.clone()));
                        }
                        Next::Wait(st.attempt)
                    }
                }
            };
            match next {
                Next::Send(mut sender, active) => {
                    drop(pending.take());
                    let sent = sender.try_send_request(req).await;
                    drop(active);
                    match sent {
                        Ok(mut resp) => {
                            // The downstream side writes its own version.
                            *resp.version_mut() = Version::HTTP_11;
                            return Ok(resp);
                        }
                        Err(mut e) => match e.take_message() {
                            // The connection went away before the request
                            // left: another connection takes it.
                            Some(back) => req = back,
                            None => return Err(UpstreamError::Http(e.into_error())),
                        },
                    }
                }
                Next::Wait(attempt) => {
                    settled.await;
                    let st = ep.lock();
                    if let Some((failed, why)) = &st.failed
                        && *failed == attempt
                    {
                        return Err(UpstreamError::Connect(Box::new(std::io::Error::other(
                            why.clone(),
                        ))));
                    }
                }
            }
        }
    }
}

/// A connection that takes another stream, retiring the ones that went
/// away, got too old or idle, or carried their share of requests.
fn pick(st: &mut EndpointState, opts: &ConnOptions, limits: &H2Limits) -> Option<Next> {
    let now = Instant::now();
    st.conns.retain(|c| {
        !c.sender.is_closed()
            && opts.reusable(c.opened, c.streams, now)
            && opts
                .idle_timeout
                .is_none_or(|idle| now.saturating_duration_since(c.last_used) < idle)
    });
    let i = st.conns.iter().position(|c| {
        c.sender.is_ready()
            && limits
                .max_concurrent_streams
                .is_none_or(|m| c.active.load(Ordering::SeqCst) < m)
    })?;
    let c = &mut st.conns[i];
    c.streams += 1;
    c.last_used = now;
    c.active.fetch_add(1, Ordering::SeqCst);
    let next = Next::Send(c.sender.clone(), Active(c.active.clone()));
    if !opts.reusable(c.opened, c.streams, now) {
        // Rotated: its streams finish, then it closes (no sender left).
        st.conns.swap_remove(i);
    }
    Some(next)
}

/// Opens one connection to the endpoint and wakes the requests waiting for
/// it, whatever became of it.
async fn connect(ep: Arc<Endpoint>, target: H2Target) {
    let result = open(&target).await;
    let mut st = ep.lock();
    st.connecting = false;
    let attempt = st.attempt;
    st.attempt += 1;
    match result {
        Ok(sender) => {
            let now = Instant::now();
            st.conns.push(Conn {
                sender,
                opened: now,
                last_used: now,
                streams: 0,
                active: Arc::default(),
            });
        }
        Err(e) => {
            tracing::debug!(upstream = %target.addr, error = %e, "h2 connect failed");
            st.failed = Some((attempt, e.to_string()));
        }
    }
    drop(st);
    ep.settled.notify_waiters();
}

async fn open(target: &H2Target) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let tcp = connect_tcp(target.addr, &target.opts).await?;
    match &target.tls {
        Some(tls) => {
            let stream = crate::tls::connect(tcp, &target.svid, tls, crate::tls::Carrying::Http2)
                .await
                .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
            handshake(stream).await
        }
        None => handshake(tcp).await,
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<ProxyBody>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "h2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// An HTTP/1.1 (or h2) request as HTTP/2: `Host` becomes `:authority`
/// (the endpoint address without one), connection-specific headers go
/// (`te` stays only as `trailers`), the URI is absolute.
fn to_h2(req: Request<ProxyBody>, target: SocketAddr) -> Request<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    if let Some(listed) = parts.headers.remove(CONNECTION)
        && let Ok(listed) = listed.to_str()
    {
        for name in listed.split(',') {
            parts.headers.remove(name.trim());
        }
    }
    for h in CONNECTION_SPECIFIC {
        parts.headers.remove(h);
    }
    if parts.headers.get(TE).is_some_and(|v| v != "trailers") {
        parts.headers.remove(TE);
    }
    let authority = parts
        .headers
        .remove(HOST)
        .and_then(|h| h.to_str().ok().and_then(|h| h.parse().ok()))
        .or_else(|| parts.uri.authority().cloned())
        .or_else(|| target.to_string().parse().ok());
    let mut uri = Uri::builder().scheme(
        parts
            .uri
            .scheme()
            .cloned()
            .unwrap_or(http::uri::Scheme::HTTP),
    );
    if let Some(a) = authority {
        uri = uri.authority(a);
    }
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    if let Ok(u) = uri.path_and_query(pq).build() {
        parts.uri = u;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn empty() -> ProxyBody {
        http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed()
    }

    #[test]
    fn http1_requests_become_h2_with_host_as_authority_and_no_connection_headers() {
        let req = Request::builder()
            .uri("http://127.0.0.1:9080/a?b=c")
            .header("host", "reviews:9080")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("te", "gzip")
            .header("x-keep", "yes")
            .body(empty())
            .unwrap();
        let h2 = to_h2(req, "127.0.0.1:9080".parse().unwrap());
        assert_eq!(h2.version(), Version::HTTP_2);
        assert_eq!(h2.uri(), "http://reviews:9080/a?b=c");
        let names: Vec<_> = h2.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
        let trailers = Request::builder()
            .uri("/x")
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let h2 = to_h2(trailers, "10.0.0.1:80".parse().unwrap());
        assert_eq!(h2.uri(), "http://10.0.0.1:80/x", "no Host: the endpoint");
        assert_eq!(h2.headers()["te"], "trailers");
    }
}
