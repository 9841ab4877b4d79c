//! Debug and monitoring endpoints: `/debug/syncz`, `/debug/configz`,
//! `/debug/registryz`, `/metrics`, `/healthz/ready`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{Body, error, text};
use crate::state::Shared;

/// Handles one debug request.
pub async fn handle(req: Request<Incoming>, _shared: &Shared) -> Response<Body> {
    match req.uri().path() {
        "/healthz/ready" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        p => error(StatusCode::NOT_FOUND, format!("no debug endpoint {p}")),
    }
}
