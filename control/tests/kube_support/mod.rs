//! A scripted Kubernetes API server for kube client tests: tower-test's
//! mock service behind a real `kube::Client`, answering requests with
//! recorded, real-format JSON and recording every request it saw.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The HTTP method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The content type sent.
    pub content_type: Option<String>,
    /// The body as JSON (Null when empty).
    pub body: Value,
}

impl Seen {
    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// The query parameter `k`.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
}

/// What the mock answers to a request.
pub enum Reply {
    /// A status code and JSON body.
    Json(u16, Value),
    /// A 200 watch stream: newline-delimited watch events, then the end of
    /// the stream.
    Events(Vec<Value>),
    /// Never answers (a watch with nothing to say).
    Hang,
    /// Answers with this watch stream once the test notifies.
    After(Arc<tokio::sync::Notify>, Vec<Value>),
}

/// A client and the mock's handle.
pub fn pair() -> (kube::Client, Handle<Request<Body>, Response<Body>>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request off the mock.
pub async fn next(
    handle: &mut Handle<Request<Body>, Response<Body>>,
) -> Option<(Seen, SendResponse<Response<Body>>)> {
    let (req, send) = tokio::time::timeout(Duration::from_secs(60), handle.next_request())
        .await
        .ok()??;
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.ok()?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let query = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let seen = Seen {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    Some((seen, send))
}

/// Answers `send` with `reply`; a `Hang` keeps the sender in `parked`.
pub fn answer(
    send: SendResponse<Response<Body>>,
    reply: Reply,
    parked: &mut Vec<SendResponse<Response<Body>>>,
) {
    match reply {
        Reply::Json(status, v) => send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(v.to_string().into_bytes()))
                .expect("valid response"),
        ),
        Reply::Events(events) => {
            let mut text = String::new();
            for e in events {
                text.push_str(&e.to_string());
                text.push('\n');
            }
            send.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(text.into_bytes()))
                    .expect("valid response"),
            )
        }
        Reply::Hang => parked.push(send),
        Reply::After(notify, events) => {
            tokio::spawn(async move {
                notify.notified().await;
                answer(send, Reply::Events(events), &mut Vec::new());
            });
        }
    }
}

/// Serves requests in the background with `route`, recording them all.
pub fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    route: impl Fn(&Seen) -> Reply + Send + 'static,
) -> (Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut parked = Vec::new();
        while let Some((req, send)) = next(&mut handle).await {
            let reply = route(&req);
            log.lock().unwrap().push(req);
            answer(send, reply, &mut parked);
        }
    });
    (seen, task)
}

/// Polls `cond` until it holds or 30 s (of possibly paused time) pass.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `Status` object as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

/// A list response.
pub fn list(api_version: &str, kind: &str, resource_version: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": resource_version, "continue": ""},
        "items": items
    })
}

/// A watch event.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}
