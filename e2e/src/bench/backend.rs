//! The benchmark's backend: HTTP/1.1 keep-alive, every request answered
//! `200` with the same 1 KiB body, nothing else, so that the backend costs
//! as little as possible next to the proxies.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Size of the response body.
pub const BODY_BYTES: usize = 1024;

/// Serves on `listener` forever.
pub async fn serve(listener: TcpListener) {
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_every_request_with_a_kibibyte() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l));
        let ok = tokio::task::spawn_blocking(move || super::super::procs::get_ok(addr))
            .await
            .unwrap();
        assert!(ok);
    }
}
