//! HTTP proxying (HTTP/1.1 and HTTP/2 downstream through hyper's auto
//! connection): route, apply the route's action, forward through the
//! cluster's pooled client, and log the outcome on target `access_log`.

pub mod flags;
mod forward;
pub mod grpc;
pub mod hash_key;
pub mod retry;
pub mod router;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use tracing::{debug, info};

use crate::config::{
    FaultConfig, HttpConnectionManager, HttpFilter, PathMatch, ProxyConfig, Redirect, Route,
    RouteAction, RouteSource,
};
use crate::metrics::{RequestFacts, RequestLabels, RequestSeries, Side};
use crate::peer_metadata::{ConnPeer, PeerMetadata, Received};
use crate::runtime::Shared;
use flags::{ProxyBody, ResponseFlag, local_reply, text};
use router::{RequestView, apply_adds, apply_removes, select_route, select_vhost};

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Hop-by-hop headers never forwarded (as `HeaderName`s: removing by
/// `&str` would parse the name again on every request).
const HOP_BY_HOP: [http::HeaderName; 7] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// What a connection knows about itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Original destination.
    pub dst: SocketAddr,
    /// Inbound listener (metrics report as `destination`).
    pub inbound: bool,
    /// The downstream connection is mutual TLS.
    pub mtls: bool,
    /// The client's SPIFFE ID, from its certificate (inbound mTLS).
    pub peer_identity: Option<String>,
    /// The TLS handshake negotiated `istio-peer-exchange`: the stream
    /// starts with the TCP metadata exchange
    /// ([`crate::peer_metadata::tcp`]).
    pub peer_exchange: bool,
}

/// The `x-forwarded-client-cert` value Istio's sidecars set on an inbound
/// request over mTLS: this workload (`By`) and the verified client (`URI`),
/// so the app can see who called it. `None` without a verified client.
/// Computed once per connection: both identities are the connection's.
pub fn forwarded_client_cert(own: &str, peer: Option<&str>) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("By={own};URI={}", peer?)).ok()
}

/// Sets `x-forwarded-client-cert` on an inbound request: whatever the
/// client sent is dropped (a plain-text client could claim any identity),
/// and `value` ([`forwarded_client_cert`]) set when there is one.
pub fn set_forwarded_client_cert(headers: &mut http::HeaderMap, value: Option<&HeaderValue>) {
    const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");
    headers.remove(&XFCC);
    if let Some(v) = value {
        headers.insert(XFCC, v.clone());
    }
}

/// Serves one downstream connection with an HTTP connection manager.
pub async fn serve_connection<S>(
    stream: S,
    hcm: Arc<HttpConnectionManager>,
    shared: Arc<Shared>,
    info: ConnInfo,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let xfcc = if info.inbound {
        forwarded_client_cert(&shared.workload.principal, info.peer_identity.as_deref())
    } else {
        None
    };
    let info = Arc::new(info);
    let last_series = Arc::new(ConnCache {
        xfcc,
        ..ConnCache::default()
    });
    let mut draining = shared.draining.subscribe();
    let svc = hyper::service::service_fn(move |req| {
        let (hcm, shared, info) = (hcm.clone(), shared.clone(), info.clone());
        let last_series = last_series.clone();
        async move { Ok::<_, Infallible>(handle(req, &hcm, &shared, &info, &last_series).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // On drain, finish the request in flight and close the connection
    // (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) instead of waiting for
    // an idle keep-alive client to leave.
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = draining.wait_for(|d| *d).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "downstream HTTP connection ended with an error");
    }
}

/// The metric series a connection's last request recorded into, with what
/// its labels were made of beyond the connection's own facts.
type LastSeries = Mutex<Option<(SeriesKey, RequestSeries)>>;

/// What a connection remembers between requests so that a repeating one
/// records without building labels or decoding peer metadata.
#[derive(Debug, Default)]
struct ConnCache {
    series: LastSeries,
    peer: ConnPeer,
    /// The `x-forwarded-client-cert` inbound requests get.
    xfcc: Option<HeaderValue>,
}

/// The per-request parts of the request metric labels.
#[derive(Debug)]
struct SeriesKey {
    cluster: String,
    /// Only for clusters naming no host (inbound): the service is the
    /// request's host then.
    authority: Option<String>,
    status: u16,
    flag: Option<ResponseFlag>,
    upstream_mtls: bool,
    peer: Option<Arc<PeerMetadata>>,
    grpc: Option<Option<u32>>,
}

/// What one request adds to the labels beyond its [`Outcome`].
struct RequestExtra<'a> {
    status: u16,
    peer: Option<Arc<PeerMetadata>>,
    /// `Some` for gRPC, with its status when one was seen.
    grpc: Option<Option<u32>>,
    authority: &'a str,
}

impl SeriesKey {
    fn matches(&self, out: &Outcome, extra: &RequestExtra<'_>) -> bool {
        self.status == extra.status
            && self.flag == out.flag
            && self.upstream_mtls == out.upstream_mtls
            && self.grpc == extra.grpc
            && match (&self.peer, &extra.peer) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
            && self.cluster == out.cluster
            && self
                .authority
                .as_deref()
                .is_none_or(|a| a == extra.authority)
    }
}

/// Records a finished request, looking its series up only when its labels
/// differ from the connection's previous request.
fn record_request(
    shared: &Shared,
    info: &ConnInfo,
    out: &Outcome,
    extra: RequestExtra<'_>,
    last: &LastSeries,
    figures: (f64, u64, u64),
) {
    let (duration_ms, request_bytes, response_bytes) = figures;
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((key, series)) = last.as_ref()
        && key.matches(out, &extra)
    {
        series.record(duration_ms, request_bytes, response_bytes);
        return;
    }
    let (labels, host_from_authority) = request_labels(shared, info, out, &extra);
    let series = shared.metrics.request_series(&labels);
    series.record(duration_ms, request_bytes, response_bytes);
    let key = SeriesKey {
        cluster: out.cluster.clone(),
        authority: host_from_authority.then(|| extra.authority.to_owned()),
        status: extra.status,
        flag: out.flag,
        upstream_mtls: out.upstream_mtls,
        peer: extra.peer,
        grpc: extra.grpc,
    };
    *last = Some((key, series));
}

/// Outcome details for the access log.
#[derive(Default)]
struct Outcome {
    flag: Option<ResponseFlag>,
    cluster: String,
    upstream: Option<SocketAddr>,
    route: String,
    upstream_mtls: bool,
    /// The peer metadata exchange headers of the upstream's response.
    peer: Received,
}

/// `Some(status)` for a gRPC request (content type `application/grpc*`):
/// the `grpc-status` of the response headers (a trailers-only reply), if
/// any.
fn grpc_status(grpc: bool, resp: &http::HeaderMap) -> Option<Option<u32>> {
    grpc.then(|| grpc::status_of(resp))
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn handle(
    mut req: Request<Incoming>,
    hcm: &HttpConnectionManager,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    cache: &Arc<ConnCache>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // The exchange headers never reach the app (nor, from the app, another
    // workload: the outbound side sets its own).
    let from_peer = Received::take(req.headers_mut());
    let grpc = is_grpc(req.headers());
    if info.inbound {
        set_forwarded_client_cert(req.headers_mut(), cache.xfcc.as_ref());
    }
    // The latest config at the start of the request: routes pushed later
    // apply to later requests, never to this one.
    let config = shared.config.borrow().clone();
    let method = req.method().clone();
    // Envoy's %PROTOCOL%: shows whether a peer sidecar upgraded to h2.
    let protocol = req.version();
    // The access log's copy of the path, only when the log is on (at
    // Istio's default warning level it is off).
    let path = if tracing::enabled!(target: "access_log", tracing::Level::INFO) {
        req.uri().path().to_owned()
    } else {
        String::new()
    };
    let authority = authority(&req);
    // Content-Length only: streamed bodies count as 0 (see docs/proxy.md).
    let request_bytes = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut out = Outcome::default();
    let mut resp = route_request(req, hcm, &config, shared, info, &authority, &mut out).await;
    let peer_headers = if info.inbound { &from_peer } else { &out.peer };
    let peer = shared.peer_metadata.resolve(peer_headers, &cache.peer);
    // A mesh caller (it sent valid metadata) learns who answered.
    if info.inbound {
        shared
            .peer_metadata
            .announce(resp.headers_mut(), peer.is_some());
    }
    info!(
        target: "access_log",
        method = %method,
        protocol = ?protocol,
        path = %path,
        authority = %authority,
        status = resp.status().as_u16(),
        response_flags = out.flag.map_or("-", ResponseFlag::code),
        route = %out.route,
        upstream_cluster = %out.cluster,
        upstream_host = %out.upstream.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        downstream_peer = %info.peer,
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    let size = |h: &http::HeaderMap| {
        h.get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let response_bytes = size(resp.headers());
    let extra = RequestExtra {
        status: resp.status().as_u16(),
        peer,
        grpc: grpc_status(grpc, resp.headers()),
        authority: &authority,
    };
    if extra.grpc == Some(None) && !hyper::body::Body::is_end_stream(resp.body()) {
        // A gRPC status in the trailers: record when the body ends.
        let RequestExtra { status, peer, .. } = extra;
        let (shared, info, cache) = (shared.clone(), info.clone(), cache.clone());
        let out = Outcome {
            flag: out.flag,
            cluster: out.cluster,
            upstream_mtls: out.upstream_mtls,
            ..Outcome::default()
        };
        let on_end = move |grpc_status: Option<u32>| {
            let extra = RequestExtra {
                status,
                peer,
                grpc: Some(grpc_status),
                authority: &authority,
            };
            let figures = (
                started.elapsed().as_secs_f64() * 1000.0,
                request_bytes,
                response_bytes,
            );
            record_request(&shared, &info, &out, extra, &cache.series, figures);
        };
        return resp
            .map(|body| http_body_util::BodyExt::boxed(grpc::OnTrailers::new(body, on_end)));
    }
    record_request(
        shared,
        info,
        &out,
        extra,
        &cache.series,
        (
            started.elapsed().as_secs_f64() * 1000.0,
            request_bytes,
            response_bytes,
        ),
    );
    resp
}

/// The labels of a request, and whether its service came from the request's
/// host (the cluster names none).
fn request_labels(
    shared: &Shared,
    info: &ConnInfo,
    out: &Outcome,
    extra: &RequestExtra<'_>,
) -> (RequestLabels, bool) {
    let mut service = if out.cluster.is_empty() {
        "unknown".to_owned()
    } else {
        crate::metrics::service_of_cluster(&out.cluster)
    };
    let own = Side::own(shared);
    // `inbound|9080||` names no host: the Host header does, as callers in
    // the mesh wrote it (often a short name of a service in this
    // namespace).
    let host_from_authority = service.contains('|');
    if host_from_authority {
        service = qualify(host_of(extra.authority), &own.namespace);
        // An IP address (a caller outside the mesh): the service this
        // workload serves, when the proxy knows it.
        if service.parse::<std::net::IpAddr>().is_ok()
            && let Some(local) = shared.peer_metadata.local()
            && !local.service.is_empty()
        {
            service.clone_from(&local.service);
        }
    }
    let trust_domain = crate::peer_metadata::trust_domain(&shared.workload.principal);
    let (reporter, source, destination) = if info.inbound {
        let source = match (&extra.peer, info.peer_identity.as_deref()) {
            (Some(meta), verified) => Side::of(meta, verified.unwrap_or("unknown")),
            (None, verified) => Side::verified(verified),
        };
        let destination = Side {
            principal: if info.mtls {
                own.principal.clone()
            } else {
                "unknown".to_owned()
            },
            ..own
        };
        ("destination", source, destination)
    } else {
        let destination = match &extra.peer {
            Some(meta) if out.upstream_mtls => Side::of(meta, &meta.principal(trust_domain)),
            Some(meta) => Side::of(meta, "unknown"),
            None => Side::unknown(),
        };
        ("source", own, destination)
    };
    let labels = RequestLabels::new(
        source,
        destination,
        RequestFacts {
            reporter,
            service: &service,
            protocol: if extra.grpc.is_some() { "grpc" } else { "http" },
            status: extra.status,
            grpc_status: extra.grpc.flatten(),
            flags: out.flag.map_or("-", ResponseFlag::code),
            mtls: info.mtls || out.upstream_mtls,
        },
    );
    (labels, host_from_authority)
}

/// The full name a Kubernetes service host written short stands for, seen
/// from `namespace` (`reviews` → `reviews.<ns>.svc.cluster.local`,
/// `reviews.shop.svc` → `reviews.shop.svc.cluster.local`); any other host
/// (IP address, `localhost`, a DNS name with dots) as is.
fn qualify(host: &str, namespace: &str) -> String {
    let parts = host.split('.').count();
    if host.is_empty() || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_owned()
    } else if parts == 1 && namespace != "unknown" {
        format!("{host}.{namespace}.svc.cluster.local")
    } else if parts == 3 && host.ends_with(".svc") {
        format!("{host}.cluster.local")
    } else {
        host.to_owned()
    }
}

/// The host of an authority (`reviews:9080` → `reviews`).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => authority,
    }
}

fn authority(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

async fn route_request(
    req: Request<Incoming>,
    hcm: &HttpConnectionManager,
    config: &ProxyConfig,
    shared: &Arc<Shared>,
    info: &ConnInfo,
    authority: &str,
    out: &mut Outcome,
) -> Response<ProxyBody> {
    let table = match &hcm.routes {
        RouteSource::Inline(t) => Some(t.clone()),
        RouteSource::Rds(name) => config.routes.get(name).cloned(),
    };
    let view = RequestView {
        authority,
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        scheme: "http",
        headers: req.headers(),
    };
    let Some(table) = table else {
        out.flag = Some(ResponseFlag::NoRoute);
        return local_reply(ResponseFlag::NoRoute, None);
    };
    let Some(vh) = select_vhost(&table, authority) else {
        out.flag = Some(ResponseFlag::NoRoute);
        return local_reply(ResponseFlag::NoRoute, None);
    };
    let Some(route) = select_route(vh, &view) else {
        out.flag = Some(ResponseFlag::NoRoute);
        return local_reply(ResponseFlag::NoRoute, None);
    };
    out.route = route.name.clone();
    // Per-route fault config overrides the filter's default.
    let filter_fault = hcm.http_filters.iter().find_map(|f| match f {
        HttpFilter::Fault(f) => Some(f),
        HttpFilter::Router => None,
    });
    if let Some(fault) = route.fault.as_ref().or(filter_fault)
        && let Some(resp) = inject_fault(fault, out).await
    {
        return resp;
    }
    // Header changes, most specific first (Envoy's default order).
    let mutations = [&route.headers, &vh.headers, &table.headers];
    let mut resp = match &route.action {
        RouteAction::Direct(d) => text(
            StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK),
            d.body.clone(),
        ),
        RouteAction::Redirect(r) => redirect(r, route, &req, authority),
        RouteAction::Forward(f) => {
            forward::forward(
                req, f, route, &mutations, config, shared, info, authority, out,
            )
            .await
        }
    };
    for m in mutations {
        apply_removes(resp.headers_mut(), &m.response_remove);
        apply_adds(resp.headers_mut(), &m.response_add);
    }
    resp
}

async fn inject_fault(fault: &FaultConfig, out: &mut Outcome) -> Option<Response<ProxyBody>> {
    if let Some(d) = &fault.delay
        && rand::rng().random_bool(d.fraction.clamp(0.0, 1.0))
    {
        out.flag = Some(ResponseFlag::DelayInjected);
        tokio::time::sleep(d.delay).await;
    }
    if let Some(a) = &fault.abort
        && rand::rng().random_bool(a.fraction.clamp(0.0, 1.0))
    {
        out.flag = Some(ResponseFlag::FaultInjected);
        return Some(local_reply(
            ResponseFlag::FaultInjected,
            StatusCode::from_u16(a.status).ok(),
        ));
    }
    None
}

fn rewrite_prefix(route: &Route, path: &str, replacement: &str) -> String {
    match &route.matcher.path {
        PathMatch::Prefix(p) if path.len() >= p.len() && path.is_char_boundary(p.len()) => {
            format!("{replacement}{}", &path[p.len()..])
        }
        _ => path.to_owned(),
    }
}

fn redirect(
    r: &Redirect,
    route: &Route,
    req: &Request<Incoming>,
    authority: &str,
) -> Response<ProxyBody> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p.to_owned())),
        _ => (authority, None),
    };
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.host.as_deref().unwrap_or(host);
    let port = r
        .port
        .map(|p| p.to_string())
        .or(if r.host.is_some() { None } else { port });
    let path = match (&r.path, &r.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(pre)) => rewrite_prefix(route, req.uri().path(), pre),
        (None, None) => req.uri().path().to_owned(),
    };
    let query = if r.strip_query {
        None
    } else {
        req.uri().query()
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push(':');
        location.push_str(&p);
    }
    location.push_str(&path);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = text(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        "",
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::{forwarded_client_cert, host_of, qualify, set_forwarded_client_cert};

    #[test]
    fn inbound_hosts_written_short_name_the_service_in_full() {
        assert_eq!(
            qualify(host_of("reviews:9080"), "shop"),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(
            qualify("ratings.default.svc", "shop"),
            "ratings.default.svc.cluster.local"
        );
        for as_is in [
            "198.18.0.14",
            "localhost",
            "api.example.com",
            "reviews.shop.svc.cluster.local",
        ] {
            assert_eq!(qualify(as_is, "shop"), as_is);
        }
        assert_eq!(qualify("reviews", "unknown"), "reviews");
    }

    #[test]
    fn inbound_xfcc_names_the_verified_peer_and_drops_what_the_client_sent() {
        let own = "spiffe://cluster.local/ns/shop/sa/reviews";
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/shop/sa/admin"
                .parse()
                .unwrap(),
        );
        let xfcc =
            forwarded_client_cert(own, Some("spiffe://cluster.local/ns/shop/sa/productpage"));
        set_forwarded_client_cert(&mut h, xfcc.as_ref());
        assert_eq!(
            h["x-forwarded-client-cert"],
            "By=spiffe://cluster.local/ns/shop/sa/reviews;URI=spiffe://cluster.local/ns/shop/sa/productpage"
        );
        // Plain text: no identity, and a forged header does not survive.
        h.insert(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/shop/sa/admin"
                .parse()
                .unwrap(),
        );
        let xfcc = forwarded_client_cert(own, None);
        assert!(xfcc.is_none());
        set_forwarded_client_cert(&mut h, xfcc.as_ref());
        assert!(h.get("x-forwarded-client-cert").is_none());
    }
}
