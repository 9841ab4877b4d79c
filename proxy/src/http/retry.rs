//! Retry decisions: Envoy's `retry_on` conditions (HTTP, connection and
//! gRPC ones), jittered exponential back-off, and the replayable request
//! body that makes a retry possible.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use rand::Rng;

use super::flags::ProxyBody;
use crate::config::RetryPolicy;

/// Request bodies up to this size are buffered so that a retry can resend
/// them (Envoy's default `per_request_buffer_limit_bytes` of 64 KiB); larger
/// or still streaming bodies are forwarded as they come and get one try.
pub const REPLAY_BUFFER_LIMIT: usize = 64 * 1024;

/// Envoy's default back-off base interval.
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

/// What went wrong with one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// Connecting failed.
    ConnectFailure,
    /// The connection was reset or closed before a response.
    Reset,
    /// An HTTP/2 upstream refused the stream (`REFUSED_STREAM`).
    RefusedStream,
    /// The per-try timeout fired.
    Timeout,
    /// A response arrived: its status and `grpc-status` header if any.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` from the response headers (trailers-only replies).
        grpc: Option<u32>,
    },
}

impl RetryCause {
    /// The cause for a response.
    pub fn response(status: u16, headers: &HeaderMap) -> Self {
        let grpc = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Self::Response { status, grpc }
    }
}

/// Whether `policy` retries a try that ended with `cause` (Envoy's
/// `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions).
pub fn retry_on(policy: &RetryPolicy, cause: RetryCause) -> bool {
    policy
        .retry_on
        .split(',')
        .map(str::trim)
        .any(|cond| condition(policy, cond, cause))
}

fn condition(policy: &RetryPolicy, cond: &str, cause: RetryCause) -> bool {
    use RetryCause as C;
    let no_response = matches!(
        cause,
        C::ConnectFailure | C::Reset | C::RefusedStream | C::Timeout
    );
    match (cond, cause) {
        // "5xx" and "gateway-error" include every try that got no response.
        ("5xx", C::Response { status, .. }) => status >= 500,
        ("gateway-error", C::Response { status, .. }) => matches!(status, 502..=504),
        ("5xx" | "gateway-error", _) => no_response,
        ("connect-failure", C::ConnectFailure) => true,
        ("reset", c) => no_response && c != C::RefusedStream,
        ("refused-stream", C::RefusedStream) => true,
        ("retriable-4xx", C::Response { status, .. }) => status == 409,
        ("retriable-status-codes", C::Response { status, .. }) => {
            policy.retriable_status_codes.contains(&u32::from(status))
        }
        (
            grpc_cond,
            C::Response {
                grpc: Some(code), ..
            },
        ) => grpc_code(grpc_cond).is_some_and(|c| c == code),
        _ => false,
    }
}

/// gRPC status codes of Envoy's `retry_on` gRPC conditions.
fn grpc_code(cond: &str) -> Option<u32> {
    Some(match cond {
        "cancelled" => 1,
        "deadline-exceeded" => 4,
        "resource-exhausted" => 8,
        "internal" => 13,
        "unavailable" => 14,
        _ => return None,
    })
}

/// Whether an upstream error is an HTTP/2 `REFUSED_STREAM` reset: the
/// `h2::Error` in hyper's error chain carries the reason.
pub fn is_refused_stream(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = e.source();
    }
    false
}

/// Envoy's jittered exponential back-off: before retry `n` (1-based) wait a
/// uniformly random time in `[0, min(base × 2^(n-1), max))`; `max` defaults
/// to ten times `base`.
pub fn backoff_delay(policy: &RetryPolicy, retry: u32, rng: &mut impl Rng) -> Duration {
    let base = policy.back_off_base.unwrap_or(DEFAULT_BASE_INTERVAL);
    let max = policy.back_off_max.unwrap_or(base * 10);
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..nanos))
}

/// A request body that can be sent more than once: the data chunks and
/// trailers of a fully read body.
#[derive(Debug, Clone, Default)]
pub struct Replayable {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replayable {
    /// A fresh body with the same content.
    pub fn body(&self) -> ProxyBody {
        Chunks {
            data: self.data.iter().cloned().collect(),
            trailers: self.trailers.clone(),
            rest: None,
        }
        .boxed()
    }

    /// Total bytes of data.
    pub fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request body as read for retries.
#[derive(Debug)]
pub enum RequestBody {
    /// Read to the end within the limit: can be replayed.
    Replayable(Replayable),
    /// Larger than the limit (or failed mid-way): what was read, then the
    /// rest as it streams; one try only.
    Streaming(ProxyBody),
}

/// Reads `body` up to `limit` bytes. A body that ends within the limit can
/// be replayed; otherwise the chunks already read are put back in front of
/// the rest.
pub async fn buffer(body: Incoming, limit: usize) -> RequestBody {
    let mut body = body;
    let mut data = Vec::new();
    let mut read = 0usize;
    loop {
        if body.is_end_stream() {
            return RequestBody::Replayable(Replayable {
                data,
                trailers: None,
            });
        }
        match body.frame().await {
            None => {
                return RequestBody::Replayable(Replayable {
                    data,
                    trailers: None,
                });
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => {
                    read += chunk.len();
                    data.push(chunk);
                    if read > limit {
                        return RequestBody::Streaming(
                            Chunks {
                                data: data.into(),
                                trailers: None,
                                rest: Some(body),
                            }
                            .boxed(),
                        );
                    }
                }
                Err(frame) => {
                    // Trailers end the body.
                    let trailers = frame.into_trailers().ok();
                    return RequestBody::Replayable(Replayable { data, trailers });
                }
            },
            Some(Err(error)) => {
                // The downstream failed mid-body: forward what was read and
                // let the upstream see the truncated body fail.
                tracing::debug!(%error, "request body failed while buffering");
                return RequestBody::Streaming(
                    Chunks {
                        data: data.into(),
                        trailers: None,
                        rest: None,
                    }
                    .boxed(),
                );
            }
        }
    }
}

/// Buffered chunks, then trailers, then optionally the rest of a streaming
/// body.
#[derive(Debug)]
struct Chunks {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(chunk) = self.data.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = self.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.data.iter().map(|b| b.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + buffered);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + buffered);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(on: &str) -> RetryPolicy {
        RetryPolicy {
            retry_on: on.into(),
            num_retries: 2,
            per_try_timeout: None,
            retriable_status_codes: vec![418],
            back_off_base: None,
            back_off_max: None,
        }
    }

    fn status(s: u16) -> RetryCause {
        RetryCause::Response {
            status: s,
            grpc: None,
        }
    }

    fn grpc(code: u32) -> RetryCause {
        RetryCause::Response {
            status: 200,
            grpc: Some(code),
        }
    }

    #[test]
    fn http_conditions_match_envoys_definitions() {
        let p = policy("5xx");
        assert!(retry_on(&p, status(500)));
        assert!(retry_on(&p, RetryCause::Timeout));
        assert!(retry_on(&p, RetryCause::RefusedStream));
        assert!(!retry_on(&p, status(404)));
        let p = policy("gateway-error");
        assert!(retry_on(&p, status(503)));
        assert!(!retry_on(&p, status(500)));
        let p = policy("reset");
        assert!(retry_on(&p, RetryCause::Reset));
        assert!(!retry_on(&p, RetryCause::RefusedStream));
        assert!(!retry_on(&p, status(503)));
        let p = policy("connect-failure");
        assert!(retry_on(&p, RetryCause::ConnectFailure));
        assert!(!retry_on(&p, RetryCause::Reset));
        let p = policy("refused-stream");
        assert!(retry_on(&p, RetryCause::RefusedStream));
        assert!(!retry_on(&p, RetryCause::Reset));
        let p = policy("retriable-4xx");
        assert!(retry_on(&p, status(409)));
        assert!(!retry_on(&p, status(404)));
        let p = policy("retriable-status-codes");
        assert!(retry_on(&p, status(418)));
        assert!(!retry_on(&p, status(500)));
    }

    #[test]
    fn grpc_conditions_read_the_grpc_status_header() {
        let p = policy("unavailable, cancelled,deadline-exceeded,internal,resource-exhausted");
        for code in [1, 4, 8, 13, 14] {
            assert!(retry_on(&p, grpc(code)), "{code}");
        }
        assert!(!retry_on(&p, grpc(0)));
        assert!(!retry_on(&p, grpc(5)));
        assert!(!retry_on(&p, status(503)));
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(RetryCause::response(200, &h), grpc(14));
    }

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling_capped_at_ten_times_base() {
        let p = policy("5xx");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (retry, ceiling_ms) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (30, 250)] {
            let delays: Vec<Duration> = (0..200)
                .map(|_| backoff_delay(&p, retry, &mut rng))
                .collect();
            let max = delays.iter().max().unwrap();
            let min = delays.iter().min().unwrap();
            assert!(*max < Duration::from_millis(ceiling_ms), "{retry}: {max:?}");
            // Jitter: spread over the window, not a fixed value.
            assert!(
                *max - *min > Duration::from_millis(ceiling_ms / 2),
                "{retry}: {min:?}..{max:?}"
            );
        }
        let custom = RetryPolicy {
            back_off_base: Some(Duration::from_millis(100)),
            back_off_max: Some(Duration::from_millis(150)),
            ..policy("5xx")
        };
        assert!(backoff_delay(&custom, 9, &mut rng) < Duration::from_millis(150));
    }

    /// The error hyper's HTTP/2 client returns when a real h2 server
    /// resets the request's stream with `reason`.
    async fn reset_by_server(reason: h2::Reason) -> hyper::Error {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(socket).await.unwrap();
            while let Some(Ok((_request, mut respond))) = conn.accept().await {
                respond.send_reset(reason);
            }
        });
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("http://upstream/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_real_refused_stream_is_recognised_and_other_resets_are_not() {
        assert!(is_refused_stream(
            &reset_by_server(h2::Reason::REFUSED_STREAM).await
        ));
        assert!(!is_refused_stream(
            &reset_by_server(h2::Reason::INTERNAL_ERROR).await
        ));
        let other = std::io::Error::other("connection reset");
        assert!(!is_refused_stream(&other));
    }
}
