//! Accepting connections: original destination, protocol detection,
//! filter chain selection and hand-off to HTTP or TCP proxying.

pub mod detect;
pub mod original_dst;
pub mod sni;

use std::collections::BTreeMap;
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

/// Serves one listener (by name) on an already bound socket until the proxy
/// drains. Each connection uses the listener config current when it was
/// accepted.
pub async fn serve(tcp: TcpListener, name: String, shared: Arc<Shared>) {
    serve_until(tcp, name, shared, std::future::pending()).await
}

/// [`serve`], which also stops accepting (and closes the socket, releasing
/// its port) when `stop` completes. Connections already accepted go on.
async fn serve_until(
    tcp: TcpListener,
    name: String,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut draining = shared.draining.subscribe();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = draining.wait_for(|d| *d) => {
                info!(listener = %name, "draining: no longer accepting");
                return;
            }
            _ = &mut stop => {
                info!(listener = %name, address = ?tcp.local_addr().ok(), "listener closed");
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

/// First wait before binding a listener again after its bind failed; it
/// doubles per failure up to [`BIND_RETRY_MAX`].
const BIND_RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two binds of a listener that keeps failing.
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

/// A listener accepting on its socket.
struct Bound {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A configured listener whose bind failed, waiting to be bound again.
struct Unbound {
    address: SocketAddr,
    wait: Duration,
    retry_at: tokio::time::Instant,
}

/// The listeners the proxy has bound, kept in step with the config as
/// Envoy's listener manager does: a new listener is bound; one that left
/// the config, or whose address changed, stops accepting and its socket is
/// closed (its connections go on); one whose bind fails (the port is taken)
/// is bound again after a backoff of 0.5 s doubling to 30 s, for as long as
/// it stays in the config.
#[derive(Default)]
struct Listeners {
    bound: BTreeMap<String, Bound>,
    unbound: BTreeMap<String, Unbound>,
}

impl Listeners {
    /// Brings the bound sockets in line with `wanted` (name → address).
    /// Retries only the failed binds that are due at `now`.
    async fn reconcile(
        &mut self,
        wanted: &BTreeMap<String, SocketAddr>,
        shared: &Arc<Shared>,
        now: tokio::time::Instant,
    ) {
        let stale: Vec<String> = self
            .bound
            .iter()
            .filter(|(name, b)| wanted.get(*name) != Some(&b.address))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(b) = self.bound.remove(&name) {
                let _ = b.stop.send(());
                // The task returns at once, dropping (closing) the socket, so
                // that a new listener may bind the same port right after.
                let _ = b.task.await;
            }
        }
        self.unbound
            .retain(|name, u| wanted.get(name) == Some(&u.address));
        for (name, &address) in wanted {
            if self.bound.contains_key(name)
                || self.unbound.get(name).is_some_and(|u| u.retry_at > now)
            {
                continue;
            }
            match TcpListener::bind(address).await {
                Ok(tcp) => {
                    info!(listener = %name, %address, "listening");
                    self.unbound.remove(name);
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    // Only an explicit stop closes the socket: if the manager
                    // itself ends (the config channel closed), it serves on.
                    let stopped = async move {
                        if stopped.await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    let task =
                        tokio::spawn(serve_until(tcp, name.clone(), shared.clone(), stopped));
                    self.bound.insert(
                        name.clone(),
                        Bound {
                            address,
                            stop,
                            task,
                        },
                    );
                }
                Err(error) => {
                    let wait = self
                        .unbound
                        .get(name)
                        .map_or(BIND_RETRY_FIRST, |u| (u.wait * 2).min(BIND_RETRY_MAX));
                    warn!(listener = %name, %address, %error, retry_in = ?wait, "cannot bind listener");
                    self.unbound.insert(
                        name.clone(),
                        Unbound {
                            address,
                            wait,
                            retry_at: now + wait,
                        },
                    );
                }
            }
        }
    }

    /// When the next failed bind is due, if any.
    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.unbound.values().map(|u| u.retry_at).min()
    }
}

/// Keeps the configured listeners bound (see [`Listeners`]) until the config
/// channel closes or the proxy drains; `port_overrides` remaps a listener's
/// port by name (e.g. `--outbound-port` for `virtualOutbound`).
pub async fn run(shared: Arc<Shared>, port_overrides: BTreeMap<String, u16>) {
    let mut rx = shared.config.clone();
    let mut draining = shared.draining.subscribe();
    let mut listeners = Listeners::default();
    loop {
        let wanted: BTreeMap<String, SocketAddr> = rx
            .borrow_and_update()
            .listeners
            .iter()
            .map(|(name, l)| {
                let mut address = l.address;
                if let Some(port) = port_overrides.get(name) {
                    address.set_port(*port);
                }
                (name.clone(), address)
            })
            .collect();
        listeners
            .reconcile(&wanted, &shared, tokio::time::Instant::now())
            .await;
        let retry = listeners.next_retry();
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = draining.wait_for(|d| *d) => return,
            _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {}
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

    #[tokio::test]
    async fn a_failed_bind_is_retried_with_a_doubling_backoff_and_only_when_due() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let wanted = BTreeMap::from([("a".to_owned(), taken.local_addr().unwrap())]);
        let (_tx, rx) =
            tokio::sync::watch::channel(Arc::new(crate::config::ProxyConfig::default()));
        let shared = Shared::new(rx);
        let mut listeners = Listeners::default();
        let mut now = tokio::time::Instant::now();
        let mut waits = Vec::new();
        for _ in 0..9 {
            listeners.reconcile(&wanted, &shared, now).await;
            let due = listeners.next_retry().expect("a retry is pending");
            // Not due yet: nothing is attempted, the wait does not grow.
            listeners
                .reconcile(&wanted, &shared, due - Duration::from_millis(1))
                .await;
            assert_eq!(listeners.next_retry(), Some(due));
            waits.push((due - now).as_millis());
            now = due;
        }
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert!(listeners.bound.is_empty());

        // The listener leaves the config: no retry is pending any more.
        listeners.reconcile(&BTreeMap::new(), &shared, now).await;
        assert_eq!(listeners.next_retry(), None);
        // It comes back once the port is free: bound at once.
        drop(taken);
        listeners.reconcile(&wanted, &shared, now).await;
        assert!(listeners.bound.contains_key("a"));
        assert_eq!(listeners.next_retry(), None);
    }
}
