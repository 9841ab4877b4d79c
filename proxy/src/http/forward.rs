//! Forwarding a routed request upstream: endpoint choice, circuit
//! breaker, path/host rewrite, header changes, timeouts and retries.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;
use tracing::debug;

use super::flags::{ProxyBody, ResponseFlag, local_reply, text};
use super::hash_key;
use super::retry::{self, Replayable, RequestBody, RetryCause, retry_on};
use super::router::{apply_adds, apply_removes, pick_cluster};
use super::upstream::{self, UpstreamError};
use super::{ConnInfo, DEFAULT_ROUTE_TIMEOUT, HOP_BY_HOP, Outcome, rewrite_prefix};
use crate::config::{Discovery, ForwardAction, ProxyConfig, Route, UpstreamProtocol};
use crate::lb::PickOptions;
use crate::lb::pool::{ConnectionSlot, SlotError};
use crate::lb::stats::ClusterStats;
use crate::runtime::Shared;
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    mut req: Request<Incoming>,
    f: &ForwardAction,
    route: &Route,
    mutations: &[&crate::config::HeaderMutation; 3],
    config: &ProxyConfig,
    shared: &Arc<Shared>,
    info: &ConnInfo,
    authority: &str,
    out: &mut Outcome,
) -> Response<ProxyBody> {
    let (cluster_name, pick_headers) =
        pick_cluster(&f.target, |total| rand::rng().random_range(0..total));
    out.cluster = cluster_name.to_owned();
    let Some(cluster) = config.clusters.get(cluster_name) else {
        out.flag = Some(ResponseFlag::NoCluster);
        return local_reply(ResponseFlag::NoCluster, None);
    };
    // Held for the whole request: the circuit breaker counts requests in
    // flight to the cluster.
    let max_requests = cluster
        .circuit_breaker
        .as_ref()
        .and_then(|cb| cb.max_requests);
    // One lookup of the cluster's balancer per request (it allocates the key).
    let lb = shared.balancers.cluster(&cluster.name);
    let Some(_admission) = lb.admit(max_requests) else {
        shared.balancers.stats.register(&shared.metrics);
        ClusterStats::inc(&shared.balancers.stats.overflow, &cluster.name);
        out.flag = Some(ResponseFlag::UpstreamOverflow);
        return local_reply(ResponseFlag::UpstreamOverflow, None);
    };
    let downstream_h2 = req.version() == http::Version::HTTP_2;
    // HTTP/1.1 `Upgrade` (WebSocket and friends): the upgrade headers pass
    // through and, on 101, the two connections are spliced.
    let upgrade = is_upgrade(&req);
    let mut downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut path = parts.uri.path().to_owned();
    if let Some(pre) = &f.prefix_rewrite {
        path = rewrite_prefix(route, &path, pre);
    }
    if let Some((re, sub)) = &f.regex_rewrite {
        path = re.replace_all(&path, sub.as_str()).into_owned();
    }
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return text(StatusCode::BAD_REQUEST, "invalid request path\n");
    };
    let upgrade_value = parts.headers.get(http::header::UPGRADE).cloned();
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        parts.headers.insert(http::header::UPGRADE, u);
        parts.headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
    let host = f.host_rewrite.as_deref().unwrap_or(authority);
    if let Ok(v) = HeaderValue::from_str(host) {
        parts.headers.insert(http::header::HOST, v);
    }
    for m in pick_headers.into_iter().chain(mutations.iter().copied()) {
        apply_removes(&mut parts.headers, &m.request_remove);
        apply_adds(&mut parts.headers, &m.request_add);
    }
    let deadline = match f.timeout {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => Some(DEFAULT_ROUTE_TIMEOUT),
    }
    .map(|t| tokio::time::Instant::now() + t);
    // A body is buffered (up to 64 KiB) when a retry or a mirror may need
    // to send it again; larger bodies stream through and get one try.
    let wants_copy = f.retry.as_ref().is_some_and(|r| r.num_retries > 0) || !f.mirrors.is_empty();
    let body = if upgrade {
        RequestBody::Streaming(body.boxed())
    } else if hyper::body::Body::is_end_stream(&body) {
        RequestBody::Replayable(Replayable::default())
    } else if wants_copy {
        retry::buffer(body, retry::REPLAY_BUFFER_LIMIT).await
    } else {
        RequestBody::Streaming(body.boxed())
    };
    let (replay, mut stream) = match body {
        RequestBody::Replayable(r) => (Some(r), None),
        RequestBody::Streaming(b) => (None, Some(b)),
    };
    let retry = f
        .retry
        .as_ref()
        .filter(|r| r.num_retries > 0 && replay.is_some());
    let attempts = retry.map_or(1, |r| r.num_retries.saturating_add(1));
    if let Some(replay) = &replay
        && !f.mirrors.is_empty()
    {
        let copy = Shadowed {
            parts: &parts,
            path_and_query: path_and_query.as_str(),
            host,
            body: replay,
            inbound: info.inbound,
        };
        mirror(f, &copy, config, shared);
    }
    // Peer metadata exchange: only a mesh (mTLS) destination learns who
    // calls (after the mirrors, which announce for themselves).
    shared
        .peer_metadata
        .announce(&mut parts.headers, cluster.tls.is_some() && !info.inbound);
    let hash = hash_key::compute(&f.hash_policy, &parts.headers, parts.uri.query(), info.peer);
    let pick = PickOptions {
        hash: hash.key,
        ..PickOptions::of(cluster)
    };
    let stats = &shared.balancers.stats;
    stats.register(&shared.metrics);
    // Held while a retry is in flight: the retry budget counts them.
    let mut _retry_slot = None;
    // Over HTTP/1.1 each request in flight holds a connection: the
    // max_connections / max_pending_requests breakers apply.
    let http1 = !upgrade
        && match cluster.http.protocol {
            UpstreamProtocol::Http1 => true,
            UpstreamProtocol::Http2 => false,
            UpstreamProtocol::Downstream => !downstream_h2,
        };
    let pool_limits = cluster
        .circuit_breaker
        .as_ref()
        .filter(|cb| http1 && (cb.max_connections.is_some() || cb.max_pending_requests.is_some()));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let conn_slot = match pool_limits {
            None => None,
            Some(cb) => match lb
                .connections
                .acquire(cb.max_connections, cb.max_pending_requests, deadline)
                .await
            {
                Ok(slot) => Some(slot),
                Err(SlotError::Overflow) => {
                    ClusterStats::inc(&stats.overflow, &cluster.name);
                    out.flag = Some(ResponseFlag::UpstreamOverflow);
                    return local_reply(ResponseFlag::UpstreamOverflow, None);
                }
                Err(SlotError::Timeout) => {
                    out.flag = Some(ResponseFlag::UpstreamTimeout);
                    return local_reply(ResponseFlag::UpstreamTimeout, None);
                }
            },
        };
        // Held until the response headers arrive, for least-request accounting.
        let mut _active = None;
        let target = match &cluster.discovery {
            Discovery::OriginalDst => info.dst,
            _ => {
                let picked = config
                    .cluster_endpoints(cluster)
                    .and_then(|la| lb.pick_with(pick, &la));
                let Some(active) = picked else {
                    out.flag = Some(ResponseFlag::NoHealthyUpstream);
                    return local_reply(ResponseFlag::NoHealthyUpstream, None);
                };
                let addr = active.address;
                _active = Some(active);
                addr
            }
        };
        out.upstream = Some(target);
        // Origin-form here; `send` adds the scheme and authority for the
        // clients that want an absolute URI.
        let uri = Uri::from(path_and_query.clone());
        let request_body = match &replay {
            Some(r) => r.body(),
            None => stream.take().unwrap_or_else(empty_body),
        };
        let mut request = Request::new(request_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        // The last possible try takes the headers instead of copying them
        // (most requests: no retry policy).
        *request.headers_mut() = if attempt >= attempts {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if cluster.tls.is_some() {
            out.upstream_mtls = true;
        }
        let call = send(request, target, cluster, upgrade, downstream_h2, shared);
        let per_try = retry
            .and_then(|r| r.per_try_timeout)
            .map(|t| tokio::time::Instant::now() + t);
        let try_deadline = match (deadline, per_try) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match try_deadline {
            Some(d) => tokio::time::timeout_at(d, call).await.ok(),
            None => Some(call.await),
        };
        if let Some(Err(e)) = &result
            && e.is_overflow()
        {
            // An h2 request that would wait for a connection past
            // max_pending_requests.
            ClusterStats::inc(&stats.overflow, &cluster.name);
            out.flag = Some(ResponseFlag::UpstreamOverflow);
            return local_reply(ResponseFlag::UpstreamOverflow, None);
        }
        _retry_slot = None;
        let cause = match &result {
            None => RetryCause::Timeout,
            Some(Ok(r)) => RetryCause::response(r.status().as_u16(), r.headers()),
            Some(Err(e)) if e.is_connect() => RetryCause::ConnectFailure,
            Some(Err(e)) if retry::is_refused_stream(e) => RetryCause::RefusedStream,
            Some(Err(_)) => RetryCause::Reset,
        };
        report_outlier(config, shared, cluster, target, cause);
        let overall_expired = deadline.is_some_and(|d| d <= tokio::time::Instant::now());
        if let Some(policy) = retry
            && attempt < attempts
            && !overall_expired
            && retry_on(policy, cause)
        {
            let cb = cluster.circuit_breaker.as_ref();
            if let Some(slot) = lb.admit_retry(cb) {
                ClusterStats::inc(&stats.retry, &cluster.name);
                debug!(?cause, attempt, cluster = %cluster.name, upstream = %target, "retrying");
                _retry_slot = Some(slot);
                drop(_active.take());
                let delay = retry::backoff_delay(policy, attempt, &mut rand::rng());
                let wake = tokio::time::Instant::now() + delay;
                tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake))).await;
                continue;
            }
            ClusterStats::inc(&stats.retry_overflow, &cluster.name);
            debug!(cluster = %cluster.name, "retry overflow: budget exhausted");
        }
        let resp = match result {
            Some(Ok(resp)) => resp,
            None => {
                out.flag = Some(ResponseFlag::UpstreamTimeout);
                return local_reply(ResponseFlag::UpstreamTimeout, None);
            }
            Some(Err(e)) => {
                let flag = if e.is_connect() {
                    ResponseFlag::UpstreamConnectFailure
                } else {
                    ResponseFlag::UpstreamConnectionTermination
                };
                debug!(error = %e, cluster = %cluster.name, upstream = %target, attempt, "upstream request failed");
                out.flag = Some(flag);
                return local_reply(flag, None);
            }
        };
        let mut resp = resp;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(down) = downstream_upgrade.take()
        {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(down, up));
            let (parts, body) = resp.into_parts();
            return Response::from_parts(parts, body.boxed());
        }
        let (mut parts, body) = resp.into_parts();
        for h in &HOP_BY_HOP {
            parts.headers.remove(h);
        }
        out.peer = crate::peer_metadata::Received::take(&mut parts.headers);
        if let Some(cookie) = hash.set_cookie {
            parts.headers.append(http::header::SET_COOKIE, cookie);
        }
        return match conn_slot {
            // The connection stays busy until the response body is done.
            Some(slot) => Response::from_parts(
                parts,
                Guarded {
                    inner: body,
                    _slot: slot,
                }
                .boxed(),
            ),
            None => Response::from_parts(parts, body.boxed()),
        };
    }
}

type Call<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<Incoming>, UpstreamError>> + Send + 'a>,
>;

/// Starts one try: a dedicated connection for upgrades, the h2 pool for
/// HTTP/2, the pooled HTTP/1.1 connections otherwise (plain or mTLS).
fn send<'a>(
    request: Request<ProxyBody>,
    target: std::net::SocketAddr,
    cluster: &'a crate::config::Cluster,
    upgrade: bool,
    downstream_h2: bool,
    shared: &'a Shared,
) -> Call<'a> {
    let h2 = match cluster.http.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => downstream_h2,
    };
    if h2 && !upgrade {
        let request = absolute(request, target);
        let target = upstream::H2Target {
            addr: target,
            opts: upstream::ConnOptions::of(cluster),
            tls: cluster.tls.clone(),
            svid: shared.svid.clone(),
        };
        let limits = upstream::H2Limits {
            max_concurrent_streams: cluster.http.max_concurrent_streams,
            max_pending_requests: cluster
                .circuit_breaker
                .as_ref()
                .and_then(|cb| cb.max_pending_requests),
        };
        let name = cluster.name.as_str();
        return Box::pin(async move {
            shared
                .upstreams
                .h2
                .send(name, request, target, limits)
                .await
        });
    }
    if upgrade {
        return Box::pin(upstream::send_dedicated(
            request,
            target,
            upstream::ConnOptions::of(cluster),
            cluster.tls.clone(),
            shared.svid.clone(),
        ));
    }
    // Borrowed for the call: no per-request copy of the cluster name or the
    // TLS settings (SNI, ALPN and SAN strings).
    Box::pin(shared.upstreams.send_h1_pooled(
        &cluster.name,
        request,
        target,
        upstream::ConnOptions::of(cluster),
        cluster.tls.as_ref(),
        &shared.svid,
    ))
}

/// `request` (origin-form) with the `http` scheme and `target` as its
/// authority: the pooled clients key their connections by it, and HTTP/2
/// sends it as `:scheme` / `:authority`.
fn absolute(request: Request<ProxyBody>, target: std::net::SocketAddr) -> Request<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Authority::try_from(target.to_string()).ok();
    // Both parts are set and valid: the conversion cannot fail.
    parts.uri = Uri::from_parts(uri).unwrap_or_default();
    Request::from_parts(parts, body)
}

/// Feeds one try's result to the cluster's outlier detection.
fn report_outlier(
    config: &ProxyConfig,
    shared: &Shared,
    cluster: &crate::config::Cluster,
    target: std::net::SocketAddr,
    cause: RetryCause,
) {
    let Some(od) = &cluster.outlier_detection else {
        return;
    };
    if matches!(cluster.discovery, Discovery::OriginalDst) {
        return;
    }
    use crate::outlier::TryResult;
    let outcome = match cause {
        RetryCause::Response {
            status: 502..=504, ..
        } => TryResult::GatewayError,
        RetryCause::Response { status, .. } if status >= 500 => TryResult::ServerError,
        RetryCause::Response { .. } => TryResult::Success,
        // Local-origin failures count as gateway errors (no split errors).
        _ => TryResult::GatewayError,
    };
    let hosts = config
        .cluster_endpoints(cluster)
        .map_or(0, |la| la.endpoints.len());
    let lb = shared.balancers.cluster(&cluster.name);
    if lb.outliers.report(od, hosts, target, outcome) {
        ClusterStats::inc(&shared.balancers.stats.ejections, &cluster.name);
        tracing::info!(cluster = %cluster.name, endpoint = %target, "outlier ejected");
    }
}

/// What a shadow copy is made of.
#[derive(Clone, Copy)]
struct Shadowed<'a> {
    parts: &'a http::request::Parts,
    path_and_query: &'a str,
    host: &'a str,
    body: &'a Replayable,
    /// The request came in on an inbound listener.
    inbound: bool,
}

/// Sends shadow copies of a request (whose body was buffered) to the mirror
/// clusters, with `-shadow` appended to the host as Envoy does; responses
/// are discarded.
fn mirror(f: &ForwardAction, copy: &Shadowed<'_>, config: &ProxyConfig, shared: &Arc<Shared>) {
    let Shadowed {
        parts,
        path_and_query,
        host,
        body,
        inbound,
    } = *copy;
    for (name, fraction) in &f.mirrors {
        if !rand::rng().random_bool(fraction.clamp(0.0, 1.0)) {
            continue;
        }
        let Some(cluster) = config.clusters.get(name) else {
            continue;
        };
        let Some(active) = config.cluster_endpoints(cluster).and_then(|la| {
            shared
                .balancers
                .cluster(&cluster.name)
                .pick(cluster.lb_policy, &la)
        }) else {
            continue;
        };
        let Ok(uri) = Uri::try_from(path_and_query) else {
            continue;
        };
        let mut req = Request::new(body.body());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = parts.headers.clone();
        let shadow_host = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}-shadow:{p}"),
            _ => format!("{host}-shadow"),
        };
        if let Ok(v) = HeaderValue::from_str(&shadow_host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        // A mesh (mTLS) shadow learns who calls, as the primary does.
        shared
            .peer_metadata
            .announce(req.headers_mut(), cluster.tls.is_some() && !inbound);
        let (shared, name, tls) = (shared.clone(), cluster.name.clone(), cluster.tls.clone());
        let opts = upstream::ConnOptions::of(cluster);
        tokio::spawn(async move {
            let target = active.address;
            let _active = active;
            let sent = shared
                .upstreams
                .send_h1_pooled(&name, req, target, opts, tls.as_ref(), &shared.svid)
                .await;
            if let Err(error) = sent {
                debug!(%error, cluster = %name, "mirror request failed");
            }
        });
    }
}

/// A response body that holds a connection slot until it is dropped.
#[derive(Debug)]
struct Guarded {
    inner: Incoming,
    _slot: ConnectionSlot,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Copies bytes both ways between the upgraded downstream and upstream
/// connections until both sides close.
async fn splice(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(down, up) {
        Ok((down, up)) => {
            let mut down = hyper_util::rt::TokioIo::new(down);
            let mut up = hyper_util::rt::TokioIo::new(up);
            if let Err(error) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                debug!(%error, "upgraded connection ended with an error");
            }
        }
        Err(error) => debug!(%error, "upgrade failed"),
    }
}

pub(super) fn empty_body() -> ProxyBody {
    http_body_util::Empty::<bytes::Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}
