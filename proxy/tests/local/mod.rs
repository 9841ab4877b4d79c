//! A proxy configured directly (no xDS) with one HTTP listener whose route
//! table `9080` answers every host, and scriptable loopback backends: they
//! count requests, keep the bodies they saw, and answer as the test says
//! (status, headers, delay, or a reset).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proxy::config::{Cluster, Listener, LoadAssignment, ProxyConfig, RouteConfig};
use mesh_proxy::runtime::Shared;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::{chain, hcm_filter, listener, route_table};

/// What a backend does with its n-th request (0-based).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Status(u16, Vec<(&'static str, String)>),
    /// Wait, then answer 200.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A scriptable backend.
#[derive(Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub count: Arc<AtomicUsize>,
    /// Request bodies received, in order.
    pub bodies: Arc<Mutex<Vec<Bytes>>>,
    /// Requests being handled right now.
    pub active: Arc<AtomicUsize>,
}

impl Backend {
    /// Starts a backend answering per `script(n)`. 200 replies carry the
    /// backend's port in the body.
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Backend {
        let script: Script = Arc::new(script);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Backend {
            addr: l.local_addr().unwrap(),
            count: Arc::default(),
            bodies: Arc::default(),
            active: Arc::default(),
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let me = me.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let (reset_tx, mut reset_rx) = tokio::sync::mpsc::channel::<()>(1);
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            let script = script.clone();
                            let reset_tx = reset_tx.clone();
                            async move {
                                me.active.fetch_add(1, Ordering::SeqCst);
                                let n = me.count.fetch_add(1, Ordering::SeqCst);
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                me.bodies.lock().unwrap().push(body);
                                let reply = script(n);
                                let resp = match reply {
                                    Reply::Status(s, headers) => {
                                        let mut r = hyper::Response::new(Full::new(Bytes::from(
                                            format!("{}", me.addr.port()),
                                        )));
                                        *r.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
                                        for (k, v) in headers {
                                            r.headers_mut().insert(k, v.parse().unwrap());
                                        }
                                        Ok(r)
                                    }
                                    Reply::Delay(d) => {
                                        tokio::time::sleep(d).await;
                                        Ok(hyper::Response::new(Full::new(Bytes::from(format!(
                                            "{}",
                                            me.addr.port()
                                        )))))
                                    }
                                    Reply::Reset => {
                                        let _ = reset_tx.send(()).await;
                                        std::future::pending::<()>().await;
                                        Err("unreachable")
                                    }
                                };
                                me.active.fetch_sub(1, Ordering::SeqCst);
                                resp
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = reset_rx.recv() => {}
                    }
                });
            }
        });
        b
    }

    /// A backend that always answers `status`.
    pub async fn always(status: u16) -> Backend {
        Backend::start(move |_| Reply::Status(status, vec![])).await
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// A running proxy.
pub struct Proxy {
    /// Its shared state (balancers, metrics).
    pub shared: Arc<Shared>,
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// Swaps the config.
    pub tx: watch::Sender<Arc<ProxyConfig>>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Proxy {
    /// A proxy with `clusters` (static ones carry their endpoints) and the
    /// routes of table `9080`.
    pub async fn start(clusters: Vec<xcl::Cluster>, routes: Vec<xr::Route>) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let config = config(addr, clusters, routes, vec![]);
        let (tx, rx) = watch::channel(Arc::new(config));
        let shared = Shared::new(rx);
        tokio::spawn(mesh_proxy::listener::serve(
            l,
            "http".into(),
            shared.clone(),
        ));
        Proxy { shared, addr, tx }
    }

    /// Sends a request; returns status, body and response flags.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> BoxFut<(u16, String, String)> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", "svc");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        Box::pin(async move {
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let flags = resp
                .headers()
                .get("x-mesh-response-flags")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned(), flags)
        })
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// The Prometheus text.
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }
}

/// Builds the config: the listener on `addr`, the clusters, the route table
/// and EDS assignments.
pub fn config(
    addr: SocketAddr,
    clusters: Vec<xcl::Cluster>,
    routes: Vec<xr::Route>,
    eds: Vec<mesh_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>,
) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    let l = listener(
        "http",
        addr,
        false,
        vec![],
        Some(chain("http", None, hcm_filter("9080"))),
    );
    config
        .listeners
        .insert("http".into(), Arc::new(Listener::try_from(l).unwrap()));
    for c in clusters {
        let c = Cluster::try_from(c).unwrap();
        config.clusters.insert(c.name.clone(), Arc::new(c));
    }
    let table = RouteConfig::try_from(route_table("9080", &["*"], routes)).unwrap();
    config.routes.insert("9080".into(), Arc::new(table));
    for la in eds {
        let la = LoadAssignment::try_from(la).unwrap();
        config
            .endpoints
            .insert(la.cluster_name.clone(), Arc::new(la));
    }
    config
}

/// Polls `cond` every few milliseconds until it holds or 5 s pass.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The value of a metric line starting with `prefix`, 0 when absent.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
