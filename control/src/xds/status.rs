//! Per proxy and per type URL: what was sent, what was ACKed, the last NACK.
//! This is what `/debug/syncz` serves and `meshctl proxy-status` shows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::node::ProxyNode;
use crate::translate::short_type;

/// Sync state of one type for one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// When it was sent (seconds since the epoch).
    pub sent_at: Option<u64>,
    /// Last version the proxy ACKed.
    pub acked_version: Option<String>,
    /// When (seconds since the epoch).
    pub acked_at: Option<u64>,
    /// Last NACK: the proxy's error message.
    pub nack_message: Option<String>,
    /// The version that was NACKed.
    pub nack_version: Option<String>,
    /// When (seconds since the epoch).
    pub nack_at: Option<u64>,
    /// Resources in the last response.
    pub resources: usize,
}

impl TypeStatus {
    /// istioctl's word for the state: SYNCED, NOT SENT, STALE or ERROR.
    pub fn state(&self) -> &'static str {
        match (&self.sent_version, &self.acked_version, &self.nack_version) {
            (None, _, _) => "NOT SENT",
            (Some(s), _, Some(n)) if s == n => "ERROR",
            (Some(s), Some(a), _) if s == a => "SYNCED",
            _ => "STALE",
        }
    }
}

/// One connected proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// Connection id (several connections may share a node id).
    pub connection: u64,
    /// istioctl's NAME: `workload.namespace` from the node id.
    pub name: String,
    /// The node identity.
    pub node: ProxyNode,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// When the stream opened (seconds since the epoch).
    pub connected_at: u64,
    /// Snapshot version last pushed.
    pub snapshot_version: u64,
    /// By short type (CDS, EDS, LDS, RDS).
    pub types: BTreeMap<String, TypeStatus>,
}

/// All proxies' sync state.
#[derive(Debug, Default)]
pub struct SyncStatus {
    proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// istioctl's proxy name: `sidecar~ip~pod.ns~ns.svc...` → `pod.ns`.
pub fn proxy_name(node_id: &str) -> String {
    let parts: Vec<&str> = node_id.split('~').collect();
    if parts.len() == 4 {
        parts[2].to_string()
    } else {
        node_id.to_string()
    }
}

impl SyncStatus {
    fn with<F: FnOnce(&mut ProxyStatus)>(&self, conn: u64, f: F) {
        let mut m = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = m.get_mut(&conn) {
            f(p);
        }
    }

    fn with_type<F: FnOnce(&mut TypeStatus)>(&self, conn: u64, type_url: &str, f: F) {
        self.with(conn, |p| {
            f(p.types.entry(short_type(type_url).into()).or_default())
        });
    }

    /// A stream opened.
    pub fn connected(&self, conn: u64, node: &ProxyNode, protocol: &'static str) {
        let mut m = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(
            conn,
            ProxyStatus {
                connection: conn,
                name: proxy_name(&node.id),
                node: node.clone(),
                protocol,
                connected_at: now(),
                snapshot_version: 0,
                types: BTreeMap::new(),
            },
        );
    }

    /// A stream closed.
    pub fn disconnected(&self, conn: u64) {
        let mut m = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&conn);
    }

    /// A response was sent.
    pub fn sent(
        &self,
        conn: u64,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: usize,
        snapshot: u64,
    ) {
        self.with(conn, |p| {
            p.snapshot_version = p.snapshot_version.max(snapshot)
        });
        self.with_type(conn, type_url, |t| {
            t.sent_version = Some(version.into());
            t.sent_nonce = Some(nonce.into());
            t.sent_at = Some(now());
            t.resources = resources;
        });
    }

    /// The proxy ACKed `version`.
    pub fn acked(&self, conn: u64, type_url: &str, version: &str) {
        self.with_type(conn, type_url, |t| {
            t.acked_version = Some(version.into());
            t.acked_at = Some(now());
        });
    }

    /// The proxy NACKed `version` with `message`.
    pub fn nacked(&self, conn: u64, type_url: &str, version: &str, message: &str) {
        self.with_type(conn, type_url, |t| {
            t.nack_version = Some(version.into());
            t.nack_message = Some(message.into());
            t.nack_at = Some(now());
        });
    }

    /// Every proxy's state.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let m = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.proxies.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_sent_acked_and_nacked_versions() {
        let mut t = TypeStatus::default();
        assert_eq!(t.state(), "NOT SENT");
        t.sent_version = Some("a".into());
        assert_eq!(t.state(), "STALE");
        t.acked_version = Some("a".into());
        assert_eq!(t.state(), "SYNCED");
        t.sent_version = Some("b".into());
        t.nack_version = Some("b".into());
        assert_eq!(t.state(), "ERROR");
        assert_eq!(
            proxy_name("sidecar~10.0.0.1~reviews-1.shop~shop.svc.cluster.local"),
            "reviews-1.shop"
        );
    }
}
