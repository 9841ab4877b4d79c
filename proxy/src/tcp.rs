//! Opaque TCP proxying with half-close: each direction is shut down on its
//! own when the other side finishes writing. Between two sidecars over
//! mutual TLS, Istio's TCP metadata exchange runs first when the handshake
//! negotiated it ([`crate::peer_metadata::tcp`]).

use std::net::SocketAddr;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::ConnInfo;
use tracing::{debug, info};

use crate::config::{Discovery, ProxyConfig, TcpProxy};
use crate::http::router::pick_cluster;
use crate::metrics::{Side, TcpLabels};
use crate::peer_metadata::tcp::{self as peer_tcp, PeerPreamble};
use crate::runtime::Shared;

/// The metrics and access log of one proxied connection. The connection
/// counts as opened once the peer's metadata is known (after the metadata
/// exchange, when there is one), as Istio reports it, or at the latest when
/// it closes.
struct Report<'a> {
    shared: &'a Shared,
    cluster: &'a str,
    reporter: &'static str,
    source: Side,
    destination: Side,
    service: String,
    mtls: bool,
    peer: SocketAddr,
    dst: SocketAddr,
    opened: bool,
}

impl Report<'_> {
    fn labels(&self, flag: &str) -> TcpLabels {
        TcpLabels::new(
            self.reporter,
            self.source.clone(),
            self.destination.clone(),
            &self.service,
            flag,
            self.mtls,
        )
    }

    fn open(&mut self) {
        if !self.opened {
            self.opened = true;
            self.shared.metrics.tcp_opened(&self.labels("-"));
        }
    }

    fn close(&mut self, flag: &str, upstream: Option<SocketAddr>, sent: u64, received: u64) {
        self.open();
        self.shared
            .metrics
            .tcp_closed(&self.labels(flag), sent, received);
        info!(
            target: "access_log",
            protocol = "tcp",
            response_flags = flag,
            upstream_cluster = %self.cluster,
            upstream_host = %upstream.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            downstream_peer = %self.peer,
            original_dst = %self.dst,
            bytes_sent = sent,
            bytes_received = received,
            "connection"
        );
    }
}

/// Writes this proxy's metadata preamble on `stream` and reads the peer's.
async fn exchange<S>(stream: &mut S, shared: &Shared) -> std::io::Result<PeerPreamble>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match shared.peer_metadata.local() {
        Some(local) => stream.write_all(&local.preamble).await?,
        // No node metadata: still a preamble (the peer waits for one).
        None => {
            let empty = peer_tcp::preamble(&crate::peer_metadata::PeerMetadata::default(), "");
            stream.write_all(&empty).await?;
        }
    }
    stream.flush().await?;
    peer_tcp::read_preamble(stream).await
}

/// Proxies one connection to the TCP proxy's cluster. Over mutual TLS with
/// `istio-peer-exchange` negotiated (on either side), the two sidecars
/// exchange their metadata first, so that the TCP metrics name the peer
/// workload as Istio's do.
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
        peer_exchange,
    } = info;
    let (cluster_name, _) = pick_cluster(&tp.target, |total| rand::rng().random_range(0..total));
    let cluster_tls = config
        .clusters
        .get(cluster_name)
        .is_some_and(|c| c.tls.is_some());
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
    let mut report = Report {
        shared,
        cluster: cluster_name,
        reporter,
        source,
        destination,
        service,
        mtls: mtls || cluster_tls,
        peer,
        dst,
        opened: false,
    };
    // Inbound, the caller's preamble comes first; bytes that turn out not
    // to be one go upstream ahead of the rest.
    let mut early_upstream = Vec::new();
    if inbound && peer_exchange {
        match exchange(&mut downstream, shared).await {
            Ok(PeerPreamble::Metadata(Some(meta))) => {
                report.source = Side::of(&meta, peer_identity.as_deref().unwrap_or("unknown"));
            }
            Ok(PeerPreamble::Metadata(None)) => {}
            Ok(PeerPreamble::Absent(bytes)) => early_upstream = bytes,
            Err(error) => {
                debug!(%error, "TCP metadata exchange with the downstream peer failed");
                report.close("UC", None, 0, 0);
                return;
            }
        }
    }
    let expects_exchange = !inbound && cluster_tls;
    if !expects_exchange {
        report.open();
    }
    let Some(cluster) = config.clusters.get(cluster_name) else {
        report.close("NC", None, 0, 0);
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
        report.close("UO", None, 0, 0);
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
                    report.close("UH", None, 0, 0);
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
                report.close("UF", Some(target), 0, 0);
                return;
            }
            Err(_) => {
                report.close("UF", Some(target), 0, 0);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    let copied = match &cluster.tls {
        Some(tls) => {
            let mut upstream =
                match crate::tls::connect(upstream, &shared.svid, tls, crate::tls::Carrying::Tcp)
                    .await
                {
                    Ok(s) => s,
                    Err(error) => {
                        debug!(%error, upstream = %target, "mTLS to upstream failed");
                        report.close("UF", Some(target), 0, 0);
                        return;
                    }
                };
            // Outbound, the upstream sidecar's preamble: its bytes, if not
            // one, go downstream ahead of the rest.
            let mut early_downstream = Vec::new();
            if upstream.get_ref().1.alpn_protocol() == Some(peer_tcp::ALPN) {
                match exchange(&mut upstream, shared).await {
                    Ok(PeerPreamble::Metadata(Some(meta))) => {
                        let td = crate::peer_metadata::trust_domain(&shared.workload.principal);
                        report.destination = Side::of(&meta, &meta.principal(td));
                    }
                    Ok(PeerPreamble::Metadata(None)) => {}
                    Ok(PeerPreamble::Absent(bytes)) => early_downstream = bytes,
                    Err(error) => {
                        debug!(%error, upstream = %target, "TCP metadata exchange with the upstream peer failed");
                        report.close("UC", Some(target), 0, 0);
                        return;
                    }
                }
            }
            report.open();
            splice(
                &mut downstream,
                &mut upstream,
                &early_upstream,
                &early_downstream,
            )
            .await
        }
        None => {
            let mut upstream = upstream;
            splice(&mut downstream, &mut upstream, &early_upstream, &[]).await
        }
    };
    match copied {
        Ok((up, down)) => report.close("-", Some(target), down, up),
        Err(error) => {
            debug!(%error, "TCP proxy connection ended with an error");
            report.close("UC", Some(target), 0, 0);
        }
    }
}

/// Copies both ways until both sides are done, after writing bytes already
/// read from either side to the other. `copy_bidirectional` shuts down each
/// write half when the matching read half reaches EOF, which is exactly TCP
/// half-close. Returns the bytes sent upstream and downstream.
async fn splice<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    early_upstream: &[u8],
    early_downstream: &[u8],
) -> std::io::Result<(u64, u64)>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !early_upstream.is_empty() {
        upstream.write_all(early_upstream).await?;
    }
    if !early_downstream.is_empty() {
        downstream.write_all(early_downstream).await?;
    }
    let (up, down) = tokio::io::copy_bidirectional(downstream, upstream).await?;
    Ok((
        up + early_upstream.len() as u64,
        down + early_downstream.len() as u64,
    ))
}
