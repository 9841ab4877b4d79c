//! Accepting connections: original destination, protocol detection,
//! filter chain selection and hand-off to HTTP or TCP proxying.

pub mod detect;
pub mod original_dst;
pub mod sni;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::config::{FilterChain, Listener, NetworkFilter, TransportProtocol};
use crate::runtime::Shared;
use detect::{Detected, detect};

/// Sniff timeout when the listener does not set one. Short, so that
/// server-first protocols fall back to TCP quickly.
const DEFAULT_SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

/// Picks the most specific chain for a destination, detected transport and
/// TLS SNI, like Envoy: destination port, then longest IP prefix, then
/// server name (exact over the longest `*.suffix`), then transport
/// protocol; the default chain when none matches.
pub fn select_chain<'a>(
    listener: &'a Listener,
    dst: SocketAddr,
    transport: Option<TransportProtocol>,
    server_name: Option<&str>,
) -> Option<&'a FilterChain> {
    listener
        .filter_chains
        .iter()
        .filter_map(|fc| {
            let m = &fc.matcher;
            if m.destination_port.is_some_and(|p| p != dst.port()) {
                return None;
            }
            let prefix = if m.prefix_ranges.is_empty() {
                Some(-1)
            } else {
                m.prefix_ranges
                    .iter()
                    .filter(|c| c.contains(dst.ip()))
                    .map(|c| i16::from(c.len))
                    .max()
            }?;
            let name_score = if m.server_names.is_empty() {
                -1
            } else {
                let sni = server_name?;
                m.server_names
                    .iter()
                    .filter(|p| sni::server_name_matches(p, sni))
                    .map(|p| {
                        if p.starts_with("*.") {
                            p.len() as i64
                        } else {
                            i64::MAX
                        }
                    })
                    .max()?
            };
            if m.transport_protocol.is_some_and(|t| Some(t) != transport) {
                return None;
            }
            Some((
                (
                    m.destination_port.is_some(),
                    prefix,
                    name_score,
                    m.transport_protocol.is_some(),
                ),
                fc,
            ))
        })
        .max_by_key(|(score, _)| *score)
        .map(|(_, fc)| fc)
        .or(listener.default_filter_chain.as_ref())
}

fn needs_detection(l: &Listener) -> bool {
    l.filter_chains.iter().any(|fc| {
        fc.matcher.transport_protocol.is_some() || !fc.matcher.application_protocols.is_empty()
    })
}

/// Whether a chain matched on `server_names` could take a connection to
/// `dst`: only then is the ClientHello awaited (a server-first protocol on
/// another port is not held up by the sniff timeout).
fn needs_sni(l: &Listener, dst: SocketAddr) -> bool {
    l.filter_chains.iter().any(|fc| {
        let m = &fc.matcher;
        !m.server_names.is_empty()
            && m.destination_port.is_none_or(|p| p == dst.port())
            && (m.prefix_ranges.is_empty() || m.prefix_ranges.iter().any(|c| c.contains(dst.ip())))
    })
}

/// Serves one listener (by name) on an already bound socket. Each
/// connection uses the listener config current when it was accepted.
pub async fn serve(tcp: TcpListener, name: String, shared: Arc<Shared>) {
    let mut draining = shared.draining.subscribe();
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = draining.wait_for(|d| *d) => {
                info!(listener = %name, "draining: no longer accepting");
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(error) => {
                warn!(listener = %name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guard = shared.connection_guard();
        let (name, shared) = (name.clone(), shared.clone());
        tokio::spawn(async move {
            handle(stream, peer, name, shared).await;
            drop(guard);
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, name: String, shared: Arc<Shared>) {
    let config = shared.config.borrow().clone();
    let Some(listener) = config.listeners.get(&name).cloned() else {
        debug!(listener = %name, "listener no longer configured; closing");
        return;
    };
    let dst = if listener.use_original_dst {
        original_dst::original_dst(&stream)
    } else {
        stream.local_addr().ok()
    };
    let Some(dst) = dst else { return };
    let sniff_timeout = listener.sniff_timeout.unwrap_or(DEFAULT_SNIFF_TIMEOUT);
    let sni_possible = needs_sni(&listener, dst);
    let transport = if sni_possible || needs_detection(&listener) {
        let d = detect(&stream, sniff_timeout).await;
        Some(if d == Detected::Tls {
            TransportProtocol::Tls
        } else {
            TransportProtocol::RawBuffer
        })
    } else {
        None
    };
    let server_name = if transport == Some(TransportProtocol::Tls) && sni_possible {
        sni::peek_sni(&stream, sniff_timeout).await
    } else {
        None
    };
    let Some(chain) = select_chain(&listener, dst, transport, server_name.as_deref()) else {
        debug!(listener = %name, %dst, "no filter chain matches; closing");
        return;
    };
    let mut info = crate::http::ConnInfo {
        peer,
        dst,
        inbound: listener.inbound,
        mtls: chain.tls.is_some(),
        peer_identity: None,
        peer_exchange: false,
    };
    match &chain.tls {
        Some(tls) => match crate::tls::accept(stream, &shared.svid, tls).await {
            Ok((stream, peer_id)) => {
                debug!(listener = %name, peer = ?peer_id, "mTLS accepted");
                info.peer_identity = peer_id;
                info.peer_exchange =
                    stream.get_ref().1.alpn_protocol() == Some(crate::peer_metadata::tcp::ALPN);
                serve_chain(stream, chain, &config, &shared, info).await;
            }
            Err(error) => {
                warn!(listener = %name, chain = %chain.name, %peer, error = %error, "TLS refused")
            }
        },
        None => serve_chain(stream, chain, &config, &shared, info).await,
    }
}

async fn serve_chain<S>(
    stream: S,
    chain: &FilterChain,
    config: &crate::config::ProxyConfig,
    shared: &Arc<Shared>,
    info: crate::http::ConnInfo,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match &chain.filter {
        NetworkFilter::Http(hcm) => {
            crate::http::serve_connection(stream, Arc::new(hcm.clone()), shared.clone(), info).await
        }
        NetworkFilter::Tcp(tp) => crate::tcp::proxy(stream, tp, config, shared, info).await,
    }
}

/// Binds every configured listener once, as listeners appear in the config;
/// `port_overrides` remaps a listener's port by name (e.g. `--outbound-port`
/// for `virtualOutbound`). A listener's address change needs a restart.
/// Runs until the config channel closes.
pub async fn run(shared: Arc<Shared>, port_overrides: std::collections::BTreeMap<String, u16>) {
    let mut rx = shared.config.clone();
    let mut bound = BTreeSet::new();
    loop {
        let config = rx.borrow_and_update().clone();
        for (name, l) in &config.listeners {
            if bound.contains(name) {
                continue;
            }
            let mut address = l.address;
            if let Some(port) = port_overrides.get(name) {
                address.set_port(*port);
            }
            match TcpListener::bind(address).await {
                Ok(tcp) => {
                    info!(listener = %name, %address, "listening");
                    bound.insert(name.clone());
                    tokio::spawn(serve(tcp, name.clone(), shared.clone()));
                }
                Err(error) => {
                    warn!(listener = %name, %address, %error, "cannot bind listener; will retry on the next config")
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cidr, ClusterTarget, FilterChainMatch, TcpProxy};

    fn fc(
        name: &str,
        port: Option<u16>,
        prefix: Option<(&str, u8)>,
        tp: Option<TransportProtocol>,
    ) -> FilterChain {
        FilterChain {
            name: name.into(),
            matcher: FilterChainMatch {
                destination_port: port,
                prefix_ranges: prefix
                    .map(|(a, len)| Cidr {
                        addr: a.parse().unwrap(),
                        len,
                    })
                    .into_iter()
                    .collect(),
                transport_protocol: tp,
                ..Default::default()
            },
            tls: None,
            filter: NetworkFilter::Tcp(TcpProxy {
                stat_prefix: String::new(),
                target: ClusterTarget::Single(name.into()),
                idle_timeout: None,
            }),
        }
    }

    #[test]
    fn chain_selection_prefers_port_then_longest_prefix_then_transport() {
        let l = Listener {
            name: "virtualOutbound".into(),
            address: "0.0.0.0:15001".parse().unwrap(),
            use_original_dst: true,
            listener_filters: vec![],
            sniff_timeout: None,
            filter_chains: vec![
                fc("any-on-9080", Some(9080), None, None),
                fc("vip-9080", Some(9080), Some(("10.96.0.10", 32)), None),
                fc("subnet-9080", Some(9080), Some(("10.96.0.0", 16)), None),
                fc(
                    "tls-9080",
                    Some(9080),
                    Some(("10.96.0.10", 32)),
                    Some(TransportProtocol::Tls),
                ),
            ],
            default_filter_chain: Some(fc("passthrough", None, None, None)),
            inbound: false,
        };
        let pick = |dst: &str, t| {
            select_chain(&l, dst.parse().unwrap(), t, None)
                .unwrap()
                .name
                .clone()
        };
        assert_eq!(pick("10.96.0.10:9080", None), "vip-9080");
        assert_eq!(
            pick("10.96.0.10:9080", Some(TransportProtocol::Tls)),
            "tls-9080"
        );
        assert_eq!(pick("10.96.1.1:9080", None), "subnet-9080");
        assert_eq!(pick("192.168.0.1:9080", None), "any-on-9080");
        assert_eq!(pick("10.96.0.10:80", None), "passthrough");
    }

    #[test]
    fn chain_selection_matches_server_names_exact_over_wildcard_over_none() {
        let named = |name: &str, names: &[&str]| {
            let mut c = fc(name, Some(443), None, None);
            c.matcher.server_names = names.iter().map(|n| n.to_string()).collect();
            c
        };
        let l = Listener {
            name: "virtualOutbound".into(),
            address: "0.0.0.0:15001".parse().unwrap(),
            use_original_dst: true,
            listener_filters: vec![],
            sniff_timeout: None,
            filter_chains: vec![
                named("a", &["a.example"]),
                named("wild", &["*.example"]),
                named("no-sni", &[]),
            ],
            default_filter_chain: None,
            inbound: false,
        };
        let dst = "1.2.3.4:443".parse().unwrap();
        assert!(needs_sni(&l, dst));
        assert!(!needs_sni(&l, "1.2.3.4:3306".parse().unwrap()));
        let tls = Some(TransportProtocol::Tls);
        let pick = |sni| select_chain(&l, dst, tls, sni).unwrap().name.clone();
        assert_eq!(pick(Some("a.example")), "a");
        assert_eq!(pick(Some("b.example")), "wild");
        assert_eq!(pick(Some("other.org")), "no-sni");
        assert_eq!(pick(None), "no-sni");
    }
}
