//! gRPC status from the response trailers: a response body that reports
//! the `grpc-status` trailer (or its absence) once, when the body ends, fails
//! or is dropped, so that the request metrics can carry Istio's
//! `grpc_response_status` for calls whose status is not in the headers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::flags::ProxyBody;

/// The `grpc-status` of a header or trailer map, when present and numeric.
pub fn status_of(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A body calling `on_end` once with the trailers' gRPC status.
pub struct OnTrailers<F: FnOnce(Option<u32>)> {
    inner: ProxyBody,
    on_end: Option<F>,
}

impl<F: FnOnce(Option<u32>)> std::fmt::Debug for OnTrailers<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnTrailers")
            .field("ended", &self.on_end.is_none())
            .finish_non_exhaustive()
    }
}

impl<F: FnOnce(Option<u32>)> OnTrailers<F> {
    /// Wraps `inner`.
    pub fn new(inner: ProxyBody, on_end: F) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
        }
    }

    fn fire(&mut self, status: Option<u32>) {
        if let Some(f) = self.on_end.take() {
            f(status);
        }
    }
}

impl<F: FnOnce(Option<u32>)> Drop for OnTrailers<F> {
    fn drop(&mut self) {
        self.fire(None);
    }
}

impl<F: FnOnce(Option<u32>) + Unpin> Body for OnTrailers<F> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.fire(status_of(trailers));
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.fire(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn body(frames: Vec<Frame<Bytes>>) -> ProxyBody {
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, hyper::Error>));
        StreamBody::new(stream).boxed()
    }

    #[tokio::test]
    async fn reports_the_trailer_status_once_when_the_body_ends() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let b = OnTrailers::new(
            body(vec![
                Frame::data(Bytes::from_static(b"msg")),
                Frame::trailers(trailers),
            ]),
            move |s| log.lock().unwrap().push(s),
        );
        let collected = b.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(*seen.lock().unwrap(), vec![Some(0)]);
    }

    #[tokio::test]
    async fn reports_no_status_when_the_body_ends_without_trailers_or_is_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let b = OnTrailers::new(body(vec![Frame::data(Bytes::new())]), move |s| {
            log.lock().unwrap().push(s)
        });
        b.collect().await.unwrap();
        let log = seen.clone();
        drop(OnTrailers::new(body(vec![]), move |s| {
            log.lock().unwrap().push(s)
        }));
        assert_eq!(*seen.lock().unwrap(), vec![None, None]);
    }
}
