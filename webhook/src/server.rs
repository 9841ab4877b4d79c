//! The HTTPS server for the webhooks: TLS (caller's certificate), HTTP/1.1
//! and HTTP/2, routing, body limit, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use mesh_inject::InjectConfig;
use rustls::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::WebhookMetrics;
use crate::review::ReviewError;

/// Largest request body accepted (larger ones get 413). The API server
/// caps objects at about 3 MiB; an `UPDATE` review carries two.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish after shutdown is signalled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers need: the injection settings (the same meshd hands to
/// `meshctl inject`'s code) and the counters of their decisions.
#[derive(Debug, Clone, Default)]
pub struct WebhookState {
    /// Settings of the injected sidecar.
    pub inject: InjectConfig,
    /// Decision counters; [`WebhookMetrics::register`] exports them.
    pub metrics: WebhookMetrics,
}

/// Serves `POST /inject`, `POST /validate` and `GET /healthz` over TLS on
/// `listener` until `shutdown` completes, then lets open connections finish
/// (at most 10 s). Returns when the listener is closed.
///
/// `tls` should offer ALPN `h2` and `http/1.1` ([`crate::server_config`]
/// does); a caller that rotates its certificate passes a config whose cert
/// resolver follows the rotation.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: WebhookState,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let state = Arc::new(state);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let watcher = graceful.watcher();
        let span = info_span!("webhook_conn", %peer);
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!("TLS handshake timed out");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(req, &state).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(error) = watcher.watch(conn).await {
                    debug!(%error, "webhook connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    info!("webhook server shutting down");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("webhook connections still open after the drain timeout");
    }
}

/// The webhook a path serves.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Inject,
    Validate,
}

async fn handle(req: Request<Incoming>, state: &WebhookState) -> Response<Full<Bytes>> {
    let hook = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n".into()),
        (&Method::POST, "/inject") => Hook::Inject,
        (&Method::POST, "/validate") => Hook::Validate,
        (_, "/inject" | "/validate") => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST with an AdmissionReview\n".into(),
            );
        }
        (_, "/healthz") => return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
        (_, path) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no webhook at {path}; use /inject or /validate\n"),
            );
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large(),
        Err(error) => {
            debug!(%error, "reading the review body failed");
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}\n"),
            );
        }
    };
    let metrics = &state.metrics;
    let answer = match (serde_json::from_slice::<Value>(&body), hook) {
        (Ok(review), Hook::Inject) => {
            let answer = crate::review_inject(&review, &state.inject);
            metrics.count_injection(&answer);
            answer
        }
        (Ok(review), Hook::Validate) => {
            let answer = crate::review_validate(&review);
            metrics.count_validation(&review, &answer);
            answer
        }
        (Err(error), hook) => {
            let answer = Err(ReviewError::NotJson(error));
            match hook {
                Hook::Inject => metrics.count_injection(&answer),
                Hook::Validate => metrics.count_validation(&Value::Null, &answer),
            }
            answer
        }
    };
    match answer {
        Ok(response) => {
            // A Value always serialises.
            let bytes = serde_json::to_vec(&response).unwrap_or_default();
            let mut res = Response::new(Full::new(Bytes::from(bytes)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(error) => {
            warn!(hook = ?hook, %error, "malformed admission review");
            text(StatusCode::BAD_REQUEST, format!("{error}\n"))
        }
    }
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the review is larger than {MAX_BODY_BYTES} bytes\n"),
    )
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
