//! Istio's HTTP peer metadata exchange: a sidecar sends its own node
//! metadata (a protobuf `google.protobuf.Struct`, base64-encoded) in
//! `x-envoy-peer-metadata`, and its node id in `x-envoy-peer-metadata-id`,
//! on requests to mesh destinations and on responses to mesh callers, so
//! that both ends can label metrics with the other side's workload.
//!
//! The header value is built once per proxy ([`Exchange::set_local`]); a
//! peer's header is decoded once per id ([`Exchange::resolve`]) and the
//! result shared, so that a request whose peer repeats allocates nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_proto::envoy::pb::google::protobuf as wkt;
use prost::Message as _;

use crate::xds::NodeIdentity;

pub mod tcp;

/// The header carrying the sender's node id.
pub const ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// The header carrying the sender's node metadata (base64 protobuf Struct).
pub const HEADER: &str = "x-envoy-peer-metadata";

/// Peers remembered by id; the cache starts over when it is full.
const CACHE_LIMIT: usize = 4096;

/// What one workload says about itself: the node metadata fields the
/// metric labels use (Istio's keys in brackets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// Pod name (`NAME`).
    pub name: String,
    /// Namespace (`NAMESPACE`).
    pub namespace: String,
    /// Workload name (`WORKLOAD_NAME`).
    pub workload_name: String,
    /// Cluster id (`CLUSTER_ID`).
    pub cluster_id: String,
    /// Service account (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// Pod labels (`LABELS`).
    pub labels: BTreeMap<String, String>,
}

/// `v`, or `unknown` when empty (Istio's value for a missing label).
pub fn or_unknown(v: &str) -> &str {
    if v.is_empty() { "unknown" } else { v }
}

impl PeerMetadata {
    /// The metadata of this proxy's own node.
    pub fn of_node(node: &NodeIdentity) -> Self {
        Self {
            name: node.workload_name.clone(),
            namespace: node.namespace.clone(),
            workload_name: node.workload_name.clone(),
            cluster_id: node.cluster_id.clone(),
            service_account: node.service_account.clone(),
            labels: node.labels.clone(),
        }
    }

    fn label(&self, keys: &[&str]) -> Option<&str> {
        keys.iter()
            .find_map(|k| self.labels.get(*k).filter(|v| !v.is_empty()))
            .map(String::as_str)
    }

    /// `app` label (or `app.kubernetes.io/name`), else `unknown`.
    pub fn app(&self) -> &str {
        self.label(&["app", "app.kubernetes.io/name"])
            .unwrap_or("unknown")
    }

    /// `version` label (or `app.kubernetes.io/version`), else `unknown`.
    pub fn version(&self) -> &str {
        self.label(&["version", "app.kubernetes.io/version"])
            .unwrap_or("unknown")
    }

    /// Istio's canonical service: `service.istio.io/canonical-name`, else
    /// `app.kubernetes.io/name`, else `app`, else the workload name.
    pub fn canonical_service(&self) -> &str {
        self.label(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| or_unknown(&self.workload_name))
    }

    /// Istio's canonical revision: `service.istio.io/canonical-revision`,
    /// else `app.kubernetes.io/version`, else `version`, else `latest`.
    pub fn canonical_revision(&self) -> &str {
        self.label(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or("latest")
    }

    /// The SPIFFE ID this workload's certificate carries, in `trust_domain`
    /// (`unknown` without a namespace or service account).
    pub fn principal(&self, trust_domain: &str) -> String {
        if self.namespace.is_empty() || self.service_account.is_empty() || trust_domain.is_empty() {
            return "unknown".to_owned();
        }
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// The metadata as a protobuf Struct, as Istio's Envoy sends it:
    /// string fields and a `LABELS` Struct; empty fields are left out.
    pub fn to_struct(&self) -> wkt::Struct {
        let s = |v: &str| wkt::Value {
            kind: Some(wkt::value::Kind::StringValue(v.to_owned())),
        };
        let mut fields = HashMap::new();
        for (key, value) in [
            ("NAME", &self.name),
            ("NAMESPACE", &self.namespace),
            ("WORKLOAD_NAME", &self.workload_name),
            ("CLUSTER_ID", &self.cluster_id),
            ("SERVICE_ACCOUNT", &self.service_account),
        ] {
            if !value.is_empty() {
                fields.insert(key.to_owned(), s(value));
            }
        }
        if !self.labels.is_empty() {
            let labels = wkt::Struct {
                fields: self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
            };
            fields.insert(
                "LABELS".to_owned(),
                wkt::Value {
                    kind: Some(wkt::value::Kind::StructValue(labels)),
                },
            );
        }
        wkt::Struct { fields }
    }

    /// The HTTP header value: [`Self::to_struct`] base64-encoded (standard
    /// alphabet, padded).
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_struct().encode_to_vec())
    }

    /// Decodes a peer's header value; `None` when it is not base64 of a
    /// protobuf Struct. Fields of other types are ignored.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
            .ok()?;
        let st = wkt::Struct::decode(raw.as_slice()).ok()?;
        Some(Self::from_struct(&st))
    }

    /// The metadata a Struct carries. Fields of other types are ignored.
    pub fn from_struct(st: &wkt::Struct) -> Self {
        let string = |k: &str| match st.fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(wkt::value::Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let labels = match st.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(wkt::value::Kind::StructValue(l)) => l
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(wkt::value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        Self {
            name: string("NAME"),
            namespace: string("NAMESPACE"),
            workload_name: string("WORKLOAD_NAME"),
            cluster_id: string("CLUSTER_ID"),
            service_account: string("SERVICE_ACCOUNT"),
            labels,
        }
    }
}

/// This proxy's own metadata and the header values announcing it.
#[derive(Debug)]
pub struct Local {
    /// The TCP exchange's preamble announcing the same ([`tcp::preamble`]).
    pub preamble: Bytes,
    /// The metadata.
    pub meta: Arc<PeerMetadata>,
    /// The service this workload serves, in full
    /// (`<name>.<ns>.svc.cluster.local`; empty when not known): inbound
    /// requests and connections whose host names no service report it.
    pub service: String,
    id: HeaderValue,
    value: HeaderValue,
}

/// The two exchange headers as a peer sent them, taken out of a message.
#[derive(Debug, Default)]
pub struct Received {
    id: Option<HeaderValue>,
    value: Option<HeaderValue>,
}

impl Received {
    /// Removes both exchange headers from `headers` and keeps their values
    /// (no copy: the values move out of the map).
    pub fn take(headers: &mut HeaderMap) -> Self {
        Self {
            id: headers.remove(ID_HEADER),
            value: headers.remove(HEADER),
        }
    }

    /// The peer sent either header (it speaks the exchange).
    pub fn present(&self) -> bool {
        self.id.is_some() || self.value.is_some()
    }
}

/// The last peer a connection resolved, so that a repeating id costs a
/// byte comparison.
pub type ConnPeer = Mutex<Option<(HeaderValue, Option<Arc<PeerMetadata>>)>>;

/// The proxy's side of the exchange: its own header values and the peers
/// decoded so far, by id.
#[derive(Debug, Default)]
pub struct Exchange {
    local: OnceLock<Local>,
    peers: Mutex<HashMap<HeaderValue, Option<Arc<PeerMetadata>>>>,
}

impl Exchange {
    /// Sets this proxy's metadata (once; later calls are ignored and return
    /// false). Before it is set the proxy sends no exchange headers.
    pub fn set_local(&self, node: &NodeIdentity) -> bool {
        let meta = PeerMetadata::of_node(node);
        let value = HeaderValue::from_maybe_shared(Bytes::from(meta.encode()));
        let id = HeaderValue::from_maybe_shared(Bytes::from(node.node_id()));
        let (Ok(value), Ok(id)) = (value, id) else {
            // base64 is always a valid header value; a node id with control
            // characters is not, and then the exchange stays off.
            return false;
        };
        let preamble = tcp::preamble(&meta, &node.node_id());
        self.local
            .set(Local {
                preamble,
                service: service_fqdn(&node.service_name, &node.namespace),
                meta: Arc::new(meta),
                id,
                value,
            })
            .is_ok()
    }

    /// This proxy's metadata, once set.
    pub fn local(&self) -> Option<&Local> {
        self.local.get()
    }

    /// Makes `headers` (a message leaving the proxy) carry this proxy's
    /// exchange headers when `mesh`, and none otherwise (whatever the app
    /// set never leaves the mesh hop).
    pub fn announce(&self, headers: &mut HeaderMap, mesh: bool) {
        match self.local.get().filter(|_| mesh) {
            Some(local) => {
                headers.insert(HeaderName::from_static(ID_HEADER), local.id.clone());
                headers.insert(HeaderName::from_static(HEADER), local.value.clone());
            }
            None => {
                headers.remove(ID_HEADER);
                headers.remove(HEADER);
            }
        }
    }

    /// The peer described by `received`, decoded at most once per id (per
    /// connection through `conn`, per proxy through the shared cache). A
    /// malformed header gives `None`, never an error.
    pub fn resolve(&self, received: &Received, conn: &ConnPeer) -> Option<Arc<PeerMetadata>> {
        let value = received.value.as_ref()?;
        let Some(id) = &received.id else {
            // No id: nothing to cache by.
            return PeerMetadata::decode(value.as_bytes()).map(Arc::new);
        };
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((last, peer)) = conn.as_ref()
            && last == id
        {
            return peer.clone();
        }
        let peer = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.get(id) {
                Some(p) => p.clone(),
                None => {
                    let p = PeerMetadata::decode(value.as_bytes()).map(Arc::new);
                    if peers.len() >= CACHE_LIMIT {
                        peers.clear();
                    }
                    peers.insert(id.clone(), p.clone());
                    p
                }
            }
        };
        *conn = Some((id.clone(), peer.clone()));
        peer
    }
}

/// A Kubernetes service name in full: `reviews` (in `namespace`) or
/// `reviews.shop` → `reviews.shop.svc.cluster.local`; a longer name as is.
pub fn service_fqdn(name: &str, namespace: &str) -> String {
    match name.split('.').count() {
        _ if name.is_empty() => String::new(),
        1 if !namespace.is_empty() => format!("{name}.{namespace}.svc.cluster.local"),
        2 => format!("{name}.svc.cluster.local"),
        _ => name.to_owned(),
    }
}

/// The trust domain of a SPIFFE ID (`spiffe://<td>/...`), empty otherwise.
pub fn trust_domain(spiffe_id: &str) -> &str {
    spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// Namespace and service account of a SPIFFE ID
/// (`spiffe://<td>/ns/<ns>/sa/<sa>`).
pub fn spiffe_parts(spiffe_id: &str) -> Option<(&str, &str)> {
    let path = spiffe_id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa)) if !ns.is_empty() && !sa.is_empty() => {
            Some((ns, sa))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> PeerMetadata {
        PeerMetadata {
            name: "reviews-v2-abc".into(),
            namespace: "shop".into(),
            workload_name: "reviews-v2".into(),
            cluster_id: "Kubernetes".into(),
            service_account: "reviews".into(),
            labels: BTreeMap::from([
                ("app".to_owned(), "reviews".to_owned()),
                ("version".to_owned(), "v2".to_owned()),
            ]),
        }
    }

    #[test]
    fn header_round_trips_the_metadata() {
        let m = reviews();
        let decoded = PeerMetadata::decode(m.encode().as_bytes()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(decoded.app(), "reviews");
        assert_eq!(decoded.version(), "v2");
        assert_eq!(decoded.canonical_service(), "reviews");
        assert_eq!(decoded.canonical_revision(), "v2");
        assert_eq!(
            decoded.principal("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/reviews"
        );
    }

    /// Writes protobuf by hand, field by field, as Istio's Envoy encodes a
    /// `google.protobuf.Struct` (map entries: key 1, Value 2; Value's
    /// string_value 3, struct_value 5), including a number field we skip.
    #[test]
    fn decodes_a_struct_encoded_by_hand_as_istio_does() {
        fn len_delim(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            assert!(body.len() < 128);
            out.push(body.len() as u8);
            out.extend_from_slice(body);
            out
        }
        fn string_value(s: &str) -> Vec<u8> {
            len_delim(0x1a, s.as_bytes()) // Value.string_value = 3
        }
        fn entry(key: &str, value: Vec<u8>) -> Vec<u8> {
            let mut e = len_delim(0x0a, key.as_bytes()); // key = 1
            e.extend(len_delim(0x12, &value)); // value = 2
            len_delim(0x0a, &e) // Struct.fields = 1
        }
        let labels = [
            entry("app", string_value("productpage")),
            entry("service.istio.io/canonical-revision", string_value("v1")),
        ]
        .concat();
        let struct_value = len_delim(0x2a, &labels); // Value.struct_value = 5
        // Value.number_value = 2 (a double): ignored.
        let number = [vec![0x11], 1.5f64.to_le_bytes().to_vec()].concat();
        let msg = [
            entry("NAMESPACE", string_value("default")),
            entry("WORKLOAD_NAME", string_value("productpage-v1")),
            entry("CLUSTER_ID", string_value("Kubernetes")),
            entry("LABELS", struct_value),
            entry("SOME_NUMBER", number),
        ]
        .concat();
        let header = base64::engine::general_purpose::STANDARD.encode(&msg);
        let m = PeerMetadata::decode(header.as_bytes()).unwrap();
        assert_eq!(m.namespace, "default");
        assert_eq!(m.workload_name, "productpage-v1");
        assert_eq!(m.cluster_id, "Kubernetes");
        assert_eq!(m.app(), "productpage");
        assert_eq!(m.version(), "unknown");
        assert_eq!(m.canonical_service(), "productpage");
        assert_eq!(m.canonical_revision(), "v1");
    }

    #[test]
    fn canonical_names_fall_back_to_the_workload_and_latest() {
        let m = PeerMetadata {
            workload_name: "ratings-v1".into(),
            ..Default::default()
        };
        assert_eq!(m.canonical_service(), "ratings-v1");
        assert_eq!(m.canonical_revision(), "latest");
        assert_eq!(m.app(), "unknown");
        assert_eq!(PeerMetadata::default().canonical_service(), "unknown");
    }

    #[test]
    fn malformed_headers_resolve_to_no_peer() {
        assert!(PeerMetadata::decode(b"not base64 !!").is_none());
        // Valid base64, not a Struct (a truncated length-delimited field).
        assert!(PeerMetadata::decode(b"CgVO").is_none());
        let x = Exchange::default();
        let conn = ConnPeer::default();
        let mut h = HeaderMap::new();
        h.insert(ID_HEADER, HeaderValue::from_static("sidecar~x"));
        h.insert(HEADER, HeaderValue::from_static("%%%"));
        let r = Received::take(&mut h);
        assert!(r.present() && h.is_empty());
        assert!(x.resolve(&r, &conn).is_none());
    }

    #[test]
    fn a_repeating_id_resolves_to_the_same_decoded_peer() {
        let x = Exchange::default();
        let conn = ConnPeer::default();
        let value = HeaderValue::from_str(&reviews().encode()).unwrap();
        let received = || Received {
            id: Some(HeaderValue::from_static("sidecar~10.0.0.2~reviews")),
            value: Some(value.clone()),
        };
        let a = x.resolve(&received(), &conn).unwrap();
        let b = x.resolve(&received(), &conn).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Another connection shares the proxy-wide cache.
        let c = x.resolve(&received(), &ConnPeer::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn announces_only_to_mesh_destinations_once_set() {
        let x = Exchange::default();
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("forged"));
        x.announce(&mut h, true);
        assert!(h.get(HEADER).is_none(), "nothing to announce before set");
        let node = NodeIdentity {
            namespace: "shop".into(),
            workload_name: "reviews-v2".into(),
            ..Default::default()
        };
        assert!(x.set_local(&node));
        x.announce(&mut h, true);
        assert_eq!(h[ID_HEADER], node.node_id().as_str());
        let sent = PeerMetadata::decode(h[HEADER].as_bytes()).unwrap();
        assert_eq!(sent.workload_name, "reviews-v2");
        x.announce(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn service_names_are_completed_to_kubernetes_fqdns() {
        assert_eq!(
            service_fqdn("reviews", "shop"),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(
            service_fqdn("reviews.shop", "x"),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(
            service_fqdn("a.b.svc.cluster.local", "x"),
            "a.b.svc.cluster.local"
        );
        assert_eq!(service_fqdn("", "x"), "");
    }

    #[test]
    fn spiffe_ids_split_into_namespace_and_service_account() {
        let id = "spiffe://cluster.local/ns/shop/sa/reviews";
        assert_eq!(spiffe_parts(id), Some(("shop", "reviews")));
        assert_eq!(trust_domain(id), "cluster.local");
        assert_eq!(spiffe_parts("spiffe://td/other"), None);
    }
}
