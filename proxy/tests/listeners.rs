//! The listener manager (`listener::run`) keeps the bound sockets in step
//! with the config, as Envoy's does: a listener that leaves the config
//! closes its socket (its established connections go on), and a listener
//! whose port is taken is bound again, after a backoff, once it is free.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::Shared;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A backend that writes back what it reads, chunk by chunk.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A config of TCP listeners (name, bind address) to the `echo` cluster.
fn config(echo: SocketAddr, listeners: &[(&str, SocketAddr)]) -> Arc<ProxyConfig> {
    let listeners = listeners
        .iter()
        .map(|(name, bind)| {
            listener(
                name,
                *bind,
                false,
                vec![],
                Some(chain(name, None, tcp_filter("echo"))),
            )
        })
        .collect();
    Arc::new(proxy_config(
        listeners,
        vec![static_cluster("echo", &[echo])],
        vec![],
    ))
}

/// Starts the listener manager on `listeners` (to the `echo` cluster).
fn start(
    echo: SocketAddr,
    listeners: &[(&str, SocketAddr)],
) -> (watch::Sender<Arc<ProxyConfig>>, Arc<Shared>) {
    mesh_proxy::install_crypto_provider();
    let (tx, rx) = watch::channel(config(echo, listeners));
    let shared = Shared::new(rx);
    tokio::spawn(mesh_proxy::listener::run(shared.clone(), BTreeMap::new()));
    (tx, shared)
}

/// Writes `msg` and reads it back through the proxy.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg);
}

/// Connects to `addr` and checks the echo through the proxy, retrying
/// until `deadline`.
async fn connect_through(addr: SocketAddr, within: Duration) -> TcpStream {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            round_trip(&mut s, b"hello").await;
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} not served within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback address (bound, read, released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Binds `addr` from the test, retrying until `within` passes (the proxy
/// releases it asynchronously).
async fn take(addr: SocketAddr, within: Duration) -> std::net::TcpListener {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} still bound after {within:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_removed_listener_releases_its_port_and_keeps_its_connections() {
    let echo = echo().await;
    let addr = free_addr();
    let (tx, _shared) = start(echo, &[("a", addr)]);
    let mut established = connect_through(addr, Duration::from_secs(5)).await;

    // Listener "a" leaves the config: its port is free again (the test can
    // bind it), and the connection it accepted still carries data.
    tx.send_replace(config(echo, &[]));
    let squatter = take(addr, Duration::from_secs(5)).await;
    round_trip(&mut established, b"still here").await;

    // Listener "b" wants the port while the test holds it: the bind fails
    // and is retried; once the port is free, "b" serves on it.
    tx.send_replace(config(echo, &[("b", addr)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(squatter);
    let mut via_b = connect_through(addr, Duration::from_secs(5)).await;
    round_trip(&mut via_b, b"via b").await;
    round_trip(&mut established, b"and still").await;
}

#[tokio::test]
async fn a_listener_whose_address_changes_moves_to_the_new_one() {
    let echo = echo().await;
    let (first, second) = (free_addr(), free_addr());
    let (tx, _shared) = start(echo, &[("a", first)]);
    connect_through(first, Duration::from_secs(5)).await;

    tx.send_replace(config(echo, &[("a", second)]));
    connect_through(second, Duration::from_secs(5)).await;
    drop(take(first, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn listeners_stop_accepting_when_the_proxy_drains() {
    let echo = echo().await;
    let addr = free_addr();
    let (_tx, shared) = start(echo, &[("a", addr)]);
    let mut established = connect_through(addr, Duration::from_secs(5)).await;

    shared.draining.send_replace(true);
    drop(take(addr, Duration::from_secs(5)).await);
    round_trip(&mut established, b"draining").await;
}
