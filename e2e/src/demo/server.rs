//! The demo application's HTTP server (HTTP/1.1 and HTTP/2).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::upstream::{HttpClient, Upstream, UpstreamReply, client};

/// How one demo service behaves.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Service name reported in replies, e.g. `reviews`.
    pub service: String,
    /// Version reported in replies, e.g. `v2`.
    pub version: String,
    /// Added before answering each request.
    pub latency: Duration,
    /// Probability in [0, 1] of answering 500 instead of calling upstreams.
    pub error_rate: f64,
    /// Bytes of padding added to each reply (for response-size tests).
    pub response_size: usize,
    /// Services called, in order, on every request.
    pub upstreams: Vec<Upstream>,
}

/// The JSON body of every demo reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// This service's name.
    pub service: String,
    /// This service's version.
    pub version: String,
    /// The caller's SPIFFE ID from `x-forwarded-client-cert`, when a sidecar
    /// terminated mTLS in front of this service.
    pub caller: Option<String>,
    /// The request path.
    pub path: String,
    /// What each upstream answered.
    pub upstreams: Vec<UpstreamReply>,
    /// Padding of the configured response size.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub padding: String,
}

struct State {
    config: DemoConfig,
    client: HttpClient,
}

/// Serves the demo application on `listener` until `shutdown` completes.
/// Connections in flight are finished before it returns.
pub async fn serve(
    listener: TcpListener,
    config: DemoConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        config,
        client: client(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => break,
        };
        // Small replies and chatty tests: don't wait for Nagle.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is normal for a demo.
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let cfg = &state.config;
    if req.uri().path() == "/healthz" {
        return Ok(text(StatusCode::OK, "ok\n"));
    }
    if !cfg.latency.is_zero() {
        tokio::time::sleep(cfg.latency).await;
    }
    if cfg.error_rate > 0.0 && rand::random::<f64>() < cfg.error_rate {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "{} {} failed on purpose (error rate {})\n",
                cfg.service, cfg.version, cfg.error_rate
            ),
        ));
    }
    let caller = req
        .headers()
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .and_then(super::caller_from_xfcc);
    let mut upstreams = Vec::with_capacity(cfg.upstreams.len());
    for up in &cfg.upstreams {
        upstreams.push(up.call(&state.client, req.headers()).await);
    }
    // An upstream failure makes this reply a 502, so errors show at the edge.
    let status = if upstreams.iter().all(|u| (200..300).contains(&u.status)) {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    let reply = Reply {
        service: cfg.service.clone(),
        version: cfg.version.clone(),
        caller,
        path: req.uri().path().to_string(),
        upstreams,
        padding: "x".repeat(cfg.response_size),
    };
    let body = serde_json::to_vec(&reply).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
