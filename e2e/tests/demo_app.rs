//! The demo application answers with its identity and its upstreams' answers.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_e2e::demo::{DemoConfig, Reply, Upstream, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn config(service: &str, version: &str) -> DemoConfig {
    DemoConfig {
        service: service.into(),
        version: version.into(),
        latency: Duration::ZERO,
        error_rate: 0.0,
        response_size: 0,
        upstreams: vec![],
    }
}

async fn start(cfg: DemoConfig) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, cfg, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "demo");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn reply_names_service_version_caller_and_upstream_answers() {
    let (ratings, _stop_ratings) = start(config("ratings", "v1")).await;
    let mut reviews = config("reviews", "v2");
    reviews.upstreams = vec![Upstream {
        url: "http://ratings.default:9080/ratings/1".parse().unwrap(),
        via: Some(ratings),
    }];
    let (addr, _stop) = start(reviews).await;

    let xfcc = "By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/default/sa/productpage";
    let (status, body) = get(addr, "/reviews/1", &[("x-forwarded-client-cert", xfcc)]).await;
    assert_eq!(status, 200, "{body}");
    let reply: Reply = serde_json::from_str(&body).unwrap();
    assert_eq!(reply.service, "reviews");
    assert_eq!(reply.version, "v2");
    assert_eq!(reply.path, "/reviews/1");
    assert_eq!(
        reply.caller.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/productpage")
    );
    assert_eq!(reply.upstreams.len(), 1);
    assert_eq!(reply.upstreams[0].status, 200);
    assert_eq!(reply.upstreams[0].body["service"], "ratings");
    assert_eq!(reply.upstreams[0].body["path"], "/ratings/1");
    // Without a sidecar in front there is no caller identity.
    assert_eq!(reply.upstreams[0].body["caller"], serde_json::Value::Null);
}

#[tokio::test]
async fn error_rate_one_always_fails_and_padding_sets_the_size() {
    let mut failing = config("reviews", "v1");
    failing.error_rate = 1.0;
    let (addr, _stop) = start(failing).await;
    for _ in 0..5 {
        let (status, body) = get(addr, "/", &[]).await;
        assert_eq!(status, 500);
        assert!(body.contains("failed on purpose"), "{body}");
    }

    let mut big = config("details", "v1");
    big.response_size = 4096;
    let (addr, _stop2) = start(big).await;
    let (status, body) = get(addr, "/", &[]).await;
    assert_eq!(status, 200);
    let reply: Reply = serde_json::from_str(&body).unwrap();
    assert_eq!(reply.padding.len(), 4096);
}

#[tokio::test]
async fn unreachable_upstream_turns_the_reply_into_502_with_the_reason() {
    // Bind then drop to get a loopback port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut front = config("productpage", "v1");
    front.upstreams = vec![Upstream {
        url: "http://reviews:9080/".parse().unwrap(),
        via: Some(dead),
    }];
    let (addr, _stop) = start(front).await;
    let (status, body) = get(addr, "/", &[]).await;
    assert_eq!(status, 502, "{body}");
    let reply: Reply = serde_json::from_str(&body).unwrap();
    assert_eq!(reply.upstreams[0].status, 0);
    assert!(
        reply.upstreams[0]
            .body
            .as_str()
            .unwrap()
            .contains("request failed")
    );
}
