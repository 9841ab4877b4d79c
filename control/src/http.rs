//! The HTTP server on the monitoring/debug port (15014): the management API
//! (`/apis/v1/...`), the debug endpoints (`/debug/...`) and `/metrics`.
//! A plain hyper 1 server with a hand-written router: a handful of routes do
//! not need a framework.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::state::Shared;

/// A response body: whole or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (an apply of many documents).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, shared).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "http connection ended with error");
            }
        });
    }
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.starts_with("/apis/v1") {
        crate::api::handle(req, &shared).await
    } else if path.starts_with("/debug/") || path == "/metrics" || path == "/healthz/ready" {
        crate::debug::handle(req, &shared).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint {path}; see docs/meshd.md for the API"),
        )
    }
}

/// Reads a whole request body, bounded by [`MAX_BODY`].
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("reading request body: {e}"),
        )),
    }
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => with_type(status, "application/json", bytes.into()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    with_type(status, content_type, body.into())
}

/// A JSON error `{"error": message, "errors": [..]}`.
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    errors(status, message, Vec::new())
}

/// A JSON error with a list of details (e.g. field errors).
pub fn errors(status: StatusCode, message: String, details: Vec<String>) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "errors": details });
    with_type(status, "application/json", body.to_string().into())
}

fn with_type(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(bytes).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
