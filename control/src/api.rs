//! The management API: `/apis/v1/...` (apply, get, list, delete, watch).

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::documents;
use crate::http::{Body, error, errors, json, read_body};
use crate::state::Shared;
use crate::store::{ResourceKey, StoreError};

/// Handles one `/apis/v1` request.
pub async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = parse_query(req.uri().query());
    let segs: Vec<&str> = path
        .trim_start_matches("/apis/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (req.method().clone(), segs.as_slice()) {
        (Method::POST, ["apply"]) => apply(req, shared).await,
        (Method::POST, ["delete"]) => delete_documents(req, shared).await,
        (Method::GET, ["watch"]) => watch(shared, query.get("kind").cloned()),
        (Method::GET, [kind]) => {
            list(shared, kind, query.get("namespace").map(|s| s.as_str())).await
        }
        (Method::GET, [kind, ns, name]) => match key(kind, ns, name) {
            Ok(k) => match shared.store.get(&k).await {
                Ok(Some(o)) => json(StatusCode::OK, &o.object),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    format!("{k} not found; list them with `meshctl get {}`", k.kind),
                ),
                Err(e) => store_error(e),
            },
            Err(r) => *r,
        },
        (Method::DELETE, [kind, ns, name]) => match key(kind, ns, name) {
            Ok(k) => match shared.store.delete(vec![k]).await {
                Ok(results) => json(StatusCode::OK, &serde_json::json!({ "results": results })),
                Err(e) => store_error(e),
            },
            Err(r) => *r,
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no API route {} {path}", req.method()),
        ),
    }
}

fn key(kind: &str, ns: &str, name: &str) -> Result<ResourceKey, Box<Response<Body>>> {
    let kind = canonical(kind)?;
    Ok(ResourceKey {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

fn canonical(kind: &str) -> Result<String, Box<Response<Body>>> {
    documents::canonical_kind(kind).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!("unknown kind {kind:?}; use e.g. virtualservice (vs), destinationrule (dr), serviceentry (se), workloadentry (we)"),
        ))
    })
}

async fn apply(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = String::from_utf8_lossy(&body);
    let objects = match documents::parse(&text, "request") {
        Ok(o) => o,
        Err(es) => {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid resources; nothing was applied".into(),
                es,
            );
        }
    };
    match shared.store.apply(objects).await {
        Ok(results) => json(StatusCode::OK, &serde_json::json!({ "results": results })),
        Err(e) => store_error(e),
    }
}

async fn delete_documents(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = String::from_utf8_lossy(&body);
    let keys = match documents::parse(&text, "request") {
        Ok(o) => o.into_iter().map(|o| o.key).collect(),
        Err(es) => {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid resources; nothing was deleted".into(),
                es,
            );
        }
    };
    match shared.store.delete(keys).await {
        Ok(results) => json(StatusCode::OK, &serde_json::json!({ "results": results })),
        Err(e) => store_error(e),
    }
}

async fn list(shared: &Shared, kind: &str, namespace: Option<&str>) -> Response<Body> {
    let kind = if kind == "all" {
        None
    } else {
        match canonical(kind) {
            Ok(k) => Some(k),
            Err(r) => return *r,
        }
    };
    match shared.store.list(kind.as_deref(), namespace).await {
        Ok(objs) => {
            let items: Vec<_> = objs.into_iter().map(|o| o.object).collect();
            json(StatusCode::OK, &serde_json::json!({ "items": items }))
        }
        Err(e) => store_error(e),
    }
}

/// Streams watch events as newline-delimited JSON until the client leaves.
fn watch(shared: &Shared, kind: Option<String>) -> Response<Body> {
    let kind = match kind.map(|k| canonical(&k)).transpose() {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let rx = shared.store.watch();
    let stream = futures_util::stream::unfold((rx, kind), |(mut rx, kind)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if kind.as_ref().is_some_and(|k| *k != ev.object.key.kind) {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    return Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                        (rx, kind),
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!(
                        "{{\"type\":\"ERROR\",\"message\":\"watcher fell {n} events behind; list again and re-watch\"}}\n"
                    );
                    return Some((Ok(Frame::data(Bytes::from(line))), (rx, kind)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

fn store_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::ReadOnly(_) => error(StatusCode::METHOD_NOT_ALLOWED, e.to_string()),
        StoreError::Invalid(es) => errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid resources; nothing was written".into(),
            es,
        ),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
