//! Envoy response flags for responses the proxy generates, with the
//! readable bodies Envoy uses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// The response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// An Envoy response flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// No route matched (`NR`).
    NoRoute,
    /// The route's cluster does not exist (`NC`).
    NoCluster,
    /// No healthy upstream host (`UH`).
    NoHealthyUpstream,
    /// Connecting upstream failed (`UF`).
    UpstreamConnectFailure,
    /// The upstream connection ended before a response (`UC`).
    UpstreamConnectionTermination,
    /// The upstream request timed out (`UT`).
    UpstreamTimeout,
    /// The cluster's circuit breaker is open (`UO`).
    UpstreamOverflow,
    /// Aborted by fault injection (`FI`).
    FaultInjected,
    /// Delayed by fault injection (`DI`).
    DelayInjected,
}

impl ResponseFlag {
    /// Envoy's short code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoCluster => "NC",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamConnectionTermination => "UC",
            Self::UpstreamTimeout => "UT",
            Self::UpstreamOverflow => "UO",
            Self::FaultInjected => "FI",
            Self::DelayInjected => "DI",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::NoRoute => "no route matched this request",
            Self::NoCluster => "the route's cluster is not known to this proxy",
            Self::NoHealthyUpstream => "no healthy upstream",
            Self::UpstreamConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            Self::UpstreamConnectionTermination => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            Self::UpstreamTimeout => "upstream request timeout",
            Self::UpstreamOverflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            Self::FaultInjected => "fault filter abort",
            Self::DelayInjected => "fault filter delay",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Header carrying the flags on generated responses, for debugging.
pub const FLAGS_HEADER: &str = "x-mesh-response-flags";

/// A generated response with a body.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// The local reply for a flag, optionally with another status (fault aborts).
pub fn local_reply(flag: ResponseFlag, status: Option<StatusCode>) -> Response<ProxyBody> {
    let mut r = text(
        status.unwrap_or(flag.status()),
        format!("{} ({})\n", flag.body(), flag.code()),
    );
    r.headers_mut()
        .insert(FLAGS_HEADER, HeaderValue::from_static(flag.code()));
    r
}
