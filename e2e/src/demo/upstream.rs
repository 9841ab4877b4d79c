//! Calls from the demo application to its upstream services.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// One upstream the demo service calls on every request.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The logical URL, e.g. `http://reviews:9080/reviews`. Its authority is
    /// sent as `Host` (what a mesh routes on).
    pub url: Uri,
    /// Where to connect instead of the URL's authority: the sidecar's
    /// explicit outbound port when there is no transparent interception.
    pub via: Option<SocketAddr>,
}

/// What one upstream call returned, as reported in the demo's JSON reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamReply {
    /// The logical URL called.
    pub url: String,
    /// HTTP status, or 0 when the call failed below HTTP.
    pub status: u16,
    /// The upstream's body parsed as JSON when it is JSON, else as a string.
    pub body: serde_json::Value,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL has no authority (host and port) to call.
    #[error("upstream URL {0:?} needs a host, e.g. http://reviews:9080/")]
    NoAuthority(String),
    /// The URL could not be rebuilt with the connect address.
    #[error("upstream URL {url:?}: {source}")]
    Uri {
        /// The URL given.
        url: String,
        /// What was wrong with it.
        #[source]
        source: hyper::http::Error,
    },
}

/// A pooled HTTP client shared by all upstream calls.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new()).build(connector)
}

impl Upstream {
    fn request(
        &self,
        caller_headers: &hyper::HeaderMap,
    ) -> Result<Request<Empty<Bytes>>, UpstreamError> {
        let authority = self
            .url
            .authority()
            .ok_or_else(|| UpstreamError::NoAuthority(self.url.to_string()))?
            .clone();
        let connect = match self.via {
            Some(addr) => addr.to_string(),
            None => authority.to_string(),
        };
        let path = self.url.path_and_query().map_or("/", |p| p.as_str());
        let mut builder =
            Request::get(format!("http://{connect}{path}")).header(HOST, authority.as_str());
        // Propagate the headers a mesh routes and traces on, as the
        // Bookinfo services do, so header-based routing works end to end.
        for name in ["end-user", "x-request-id", "traceparent", "x-canary"] {
            if let Some(v) = caller_headers.get(name) {
                builder = builder.header(name, v);
            }
        }
        builder
            .body(Empty::new())
            .map_err(|source| UpstreamError::Uri {
                url: self.url.to_string(),
                source,
            })
    }

    /// Calls the upstream once; failures below HTTP become status 0 with the
    /// error text, so the demo always shows what happened.
    pub(crate) async fn call(
        &self,
        client: &HttpClient,
        caller_headers: &hyper::HeaderMap,
    ) -> UpstreamReply {
        let url = self.url.to_string();
        let req = match self.request(caller_headers) {
            Ok(r) => r,
            Err(e) => return failed(url, e.to_string()),
        };
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => return failed(url, format!("request failed: {e}")),
        };
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return failed(url, format!("reading body failed: {e}")),
        };
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        UpstreamReply { url, status, body }
    }
}

fn failed(url: String, error: String) -> UpstreamReply {
    UpstreamReply {
        url,
        status: 0,
        body: serde_json::Value::String(error),
    }
}
