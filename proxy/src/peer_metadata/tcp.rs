//! Istio's TCP metadata exchange. When mutual TLS between two sidecars
//! negotiates the ALPN protocol `istio-peer-exchange`, each side starts its
//! byte stream with a preamble before any application data:
//!
//! ```text
//! u32 magic 0x3D230467 (big-endian) | u32 payload length (big-endian) |
//! google.protobuf.Any { type_url: ".../google.protobuf.Struct",
//!   value: Struct { "x-envoy-peer-metadata": <the node metadata Struct>,
//!                   "x-envoy-peer-metadata-id": <the node id> } }
//! ```
//!
//! The node metadata Struct is the one the HTTP exchange sends base64-encoded
//! in `x-envoy-peer-metadata`. A stream whose first bytes are not the magic
//! carries no preamble: those bytes are application data.
//!
//! Both sides write their preamble as soon as the handshake is done and
//! never wait for the peer's before writing (an Envoy peer writes its own
//! when the first bytes arrive, so waiting would deadlock server-first
//! protocols).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{PeerMetadata, wkt};

/// The ALPN protocol that turns the exchange on.
pub const ALPN: &[u8] = b"istio-peer-exchange";
/// The preamble's first four bytes.
pub const MAGIC: u32 = 0x3D23_0467;
/// The preamble's payload type.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";
/// Keys of the payload Struct.
const METADATA_KEY: &str = "x-envoy-peer-metadata";
const ID_KEY: &str = "x-envoy-peer-metadata-id";
/// The largest payload read (Istio sets no limit; a node's metadata is a
/// few hundred bytes).
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// How long a side waits for the peer's preamble before going on without
/// the peer's metadata.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The preamble announcing `meta` (and the node id, when not empty).
pub fn preamble(meta: &PeerMetadata, node_id: &str) -> Bytes {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        METADATA_KEY.to_owned(),
        wkt::Value {
            kind: Some(wkt::value::Kind::StructValue(meta.to_struct())),
        },
    );
    if !node_id.is_empty() {
        fields.insert(
            ID_KEY.to_owned(),
            wkt::Value {
                kind: Some(wkt::value::Kind::StringValue(node_id.to_owned())),
            },
        );
    }
    let any = wkt::Any {
        type_url: STRUCT_TYPE_URL.to_owned(),
        value: wkt::Struct { fields }.encode_to_vec(),
    };
    let payload = any.encode_to_vec();
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.put_u32(MAGIC);
    // A payload is a few hundred bytes: it fits in a u32.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(&payload);
    out.freeze()
}

/// The peer metadata a preamble payload carries; `None` when it is not an
/// `Any` holding a Struct with an `x-envoy-peer-metadata` Struct.
pub fn decode_payload(payload: &[u8]) -> Option<PeerMetadata> {
    let any = wkt::Any::decode(payload).ok()?;
    if any.type_url != STRUCT_TYPE_URL {
        return None;
    }
    let outer = wkt::Struct::decode(any.value.as_slice()).ok()?;
    match outer.fields.get(METADATA_KEY)?.kind.as_ref()? {
        wkt::value::Kind::StructValue(meta) => Some(PeerMetadata::from_struct(meta)),
        _ => None,
    }
}

/// What the start of a peer's stream held.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerPreamble {
    /// A preamble, with the peer's metadata when its payload decoded.
    Metadata(Option<PeerMetadata>),
    /// No preamble: these first bytes (possibly none, when the stream
    /// ended or the peer stayed silent) are application data.
    Absent(Vec<u8>),
}

/// Reads the peer's preamble from the start of `stream`, waiting at most
/// [`PEER_TIMEOUT`] for it. Reads only the preamble's bytes; when the first
/// bytes are not one, they are returned as application data. An error only
/// for a failed read or a payload over [`MAX_PAYLOAD`].
pub async fn read_preamble<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<PeerPreamble> {
    let mut head = Vec::with_capacity(8);
    let read = tokio::time::timeout(PEER_TIMEOUT, read_into(stream, &mut head)).await;
    match read {
        // Silent past the timeout, or ended before 8 bytes: no preamble.
        Err(_) | Ok(Ok(false)) => return Ok(PeerPreamble::Absent(head)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(true)) => {}
    }
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != MAGIC {
        return Ok(PeerPreamble::Absent(head));
    }
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if size > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer metadata preamble of {size} bytes (at most {MAX_PAYLOAD})"),
        ));
    }
    let mut payload = vec![0; size as usize];
    tokio::time::timeout(PEER_TIMEOUT, stream.read_exact(&mut payload))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer metadata preamble cut short",
            )
        })??;
    Ok(PeerPreamble::Metadata(decode_payload(&payload)))
}

/// Fills `buf` up to its capacity (8 bytes); false when the stream ended
/// first. What was read stays in `buf` whatever happens.
async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    while buf.len() < 8 {
        let mut byte_budget = [0u8; 8];
        let want = 8 - buf.len();
        let n = stream.read(&mut byte_budget[..want]).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&byte_budget[..n]);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn meta() -> PeerMetadata {
        PeerMetadata {
            name: "ratings-v1-abc".into(),
            namespace: "shop".into(),
            workload_name: "ratings-v1".into(),
            cluster_id: "Kubernetes".into(),
            service_account: "ratings".into(),
            labels: [("app".to_owned(), "ratings".to_owned())].into(),
        }
    }

    #[test]
    fn the_preamble_is_magic_length_and_an_any_holding_the_metadata_struct() {
        let id = "sidecar~10.0.0.1~ratings-v1-abc.shop~shop.svc.cluster.local";
        let p = preamble(&meta(), id);
        assert_eq!(&p[..4], &[0x3d, 0x23, 0x04, 0x67]);
        let len = u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize;
        assert_eq!(len, p.len() - 8);
        let any = wkt::Any::decode(&p[8..]).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Struct");
        let outer = wkt::Struct::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            outer.fields["x-envoy-peer-metadata-id"].kind,
            Some(wkt::value::Kind::StringValue(id.into()))
        );
        assert_eq!(
            outer.fields["x-envoy-peer-metadata"].kind,
            Some(wkt::value::Kind::StructValue(meta().to_struct()))
        );
        assert_eq!(decode_payload(&p[8..]), Some(meta()));
    }

    #[test]
    fn a_payload_of_another_type_or_shape_carries_no_metadata() {
        let wrong_type = wkt::Any {
            type_url: "type.googleapis.com/google.protobuf.Value".into(),
            value: wkt::Struct::default().encode_to_vec(),
        };
        assert_eq!(decode_payload(&wrong_type.encode_to_vec()), None);
        let no_key = wkt::Any {
            type_url: STRUCT_TYPE_URL.into(),
            value: meta().to_struct().encode_to_vec(),
        };
        assert_eq!(decode_payload(&no_key.encode_to_vec()), None);
        assert_eq!(decode_payload(b"\xff\xff"), None);
    }

    #[tokio::test]
    async fn reading_stops_at_the_end_of_the_preamble() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut sent = preamble(&meta(), "").to_vec();
        sent.extend_from_slice(b"GET / HTTP/1.1\r\n");
        a.write_all(&sent).await.unwrap();
        assert_eq!(
            read_preamble(&mut b).await.unwrap(),
            PeerPreamble::Metadata(Some(meta()))
        );
        let mut rest = [0u8; 16];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn other_first_bytes_are_application_data() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"\x16\x03\x01 hello world").await.unwrap();
        assert_eq!(
            read_preamble(&mut b).await.unwrap(),
            PeerPreamble::Absent(b"\x16\x03\x01 hell".to_vec())
        );
        // Fewer than eight bytes, then the end of the stream.
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"ok").await.unwrap();
        drop(a);
        assert_eq!(
            read_preamble(&mut b).await.unwrap(),
            PeerPreamble::Absent(b"ok".to_vec())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_given_up_on_after_the_timeout() {
        let (_a, mut b) = tokio::io::duplex(4096);
        assert_eq!(
            read_preamble(&mut b).await.unwrap(),
            PeerPreamble::Absent(Vec::new())
        );
    }

    #[tokio::test]
    async fn an_oversized_preamble_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut head = MAGIC.to_be_bytes().to_vec();
        head.extend_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        a.write_all(&head).await.unwrap();
        assert!(read_preamble(&mut b).await.is_err());
    }
}
