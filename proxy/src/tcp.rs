//! Opaque TCP proxying with half-close: each direction is shut down on its
//! own when the other side finishes writing.

use std::net::SocketAddr;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::http::ConnInfo;
use tracing::{debug, info};

use crate::config::{Discovery, ProxyConfig, TcpProxy};
use crate::http::router::pick_cluster;
use crate::metrics::{Side, TcpLabels};
use crate::runtime::Shared;

/// Proxies one connection to the TCP proxy's cluster.
pub async fn proxy<S>(
    mut downstream: S,
    tp: &TcpProxy,
    config: &ProxyConfig,
    shared: &Shared,
    info: ConnInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ConnInfo {
        peer,
        dst,
        inbound,
        mtls,
        peer_identity,
    } = info;
    let (cluster_name, _) = pick_cluster(&tp.target, |total| rand::rng().random_range(0..total));
    let cluster_tls = config
        .clusters
        .get(cluster_name)
        .is_some_and(|c| c.tls.is_some());
    // No metadata exchange over TCP (Istio's is ALPN-based): inbound, the
    // caller is known by its verified SPIFFE ID only.
    let own = Side::own(shared);
    let (reporter, source, destination) = if inbound {
        let destination = Side {
            principal: if mtls {
                own.principal.clone()
            } else {
                "unknown".to_owned()
            },
            ..own
        };
        (
            "destination",
            Side::verified(peer_identity.as_deref()),
            destination,
        )
    } else {
        ("source", own, Side::unknown())
    };
    let mut service = crate::metrics::service_of_cluster(cluster_name);
    // `inbound|3306||` names no host: the service this workload serves.
    if inbound
        && service.contains('|')
        && let Some(local) = shared.peer_metadata.local()
        && !local.service.is_empty()
    {
        service.clone_from(&local.service);
    }
    let labels = |flag: &str| {
        TcpLabels::new(
            reporter,
            source.clone(),
            destination.clone(),
            &service,
            flag,
            mtls || cluster_tls,
        )
    };
    shared.metrics.tcp_opened(&labels("-"));
    let log = |flag: &str, upstream: Option<SocketAddr>, sent: u64, received: u64| {
        shared.metrics.tcp_closed(&labels(flag), sent, received);
        info!(
            target: "access_log",
            protocol = "tcp",
            response_flags = flag,
            upstream_cluster = %cluster_name,
            upstream_host = %upstream.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            downstream_peer = %peer,
            original_dst = %dst,
            bytes_sent = sent,
            bytes_received = received,
            "connection"
        );
    };
    let Some(cluster) = config.clusters.get(cluster_name) else {
        log("NC", None, 0, 0);
        return;
    };
    let max_connections = cluster
        .circuit_breaker
        .as_ref()
        .and_then(|cb| cb.max_connections);
    let Some(_admission) = shared
        .balancers
        .cluster(&cluster.name)
        .admit(max_connections)
    else {
        log("UO", None, 0, 0);
        return;
    };
    let mut _active = None;
    let target = match &cluster.discovery {
        Discovery::OriginalDst => dst,
        _ => {
            let picked = config.cluster_endpoints(cluster).and_then(|la| {
                shared
                    .balancers
                    .cluster(&cluster.name)
                    .pick(cluster.lb_policy, &la)
            });
            match picked {
                Some(a) => {
                    let addr = a.address;
                    _active = Some(a);
                    addr
                }
                // BlackHoleCluster lands here too: no endpoints, close.
                None => {
                    log("UH", None, 0, 0);
                    return;
                }
            }
        }
    };
    let upstream =
        match tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => {
                debug!(%error, upstream = %target, "TCP upstream connect failed");
                log("UF", Some(target), 0, 0);
                return;
            }
            Err(_) => {
                log("UF", Some(target), 0, 0);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    // copy_bidirectional shuts down each write half when the matching read
    // half reaches EOF, which is exactly TCP half-close.
    let copied = match &cluster.tls {
        Some(tls) => match crate::tls::connect(upstream, &shared.svid, tls).await {
            Ok(mut upstream) => tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await,
            Err(error) => {
                debug!(%error, upstream = %target, "mTLS to upstream failed");
                log("UF", Some(target), 0, 0);
                return;
            }
        },
        None => {
            let mut upstream = upstream;
            tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
        }
    };
    match copied {
        Ok((up, down)) => log("-", Some(target), down, up),
        Err(error) => {
            debug!(%error, "TCP proxy connection ended with an error");
            log("UC", Some(target), 0, 0);
        }
    }
}
