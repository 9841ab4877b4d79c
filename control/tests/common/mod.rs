//! A tiny HTTP/1 client for tests against meshd's API.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Starts meshd in-process with its data (store, CA) in `dir`, every port
/// on 127.0.0.1:0, and a 10 ms debounce.
pub async fn start_meshd(dir: &std::path::Path) -> mesh_control::server::Running {
    use clap::Parser;
    let config = mesh_control::config::Config::parse_from([
        "meshd",
        "--data-dir",
        dir.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--ca-addr",
        "127.0.0.1:0",
        "--xds-addr",
        "127.0.0.1:0",
        "--debounce",
        "10ms",
    ]);
    mesh_control::server::start(&config).await.unwrap()
}

/// Opens a delta ADS stream on `client` starting with `first`: the sender
/// for further requests (the stream stays open while it lives) and the
/// responses.
pub async fn open_delta(
    client: &mut mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    first: mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
) -> (
    tokio::sync::mpsc::Sender<
        mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    >,
    tonic::Streaming<mesh_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let stream = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}
