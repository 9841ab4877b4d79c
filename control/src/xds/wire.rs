//! Delta ADS responses written from pre-encoded parts. Each resource of a
//! class is encoded once (as the `resources` field of a
//! `DeltaDiscoveryResponse`, [`resource_field`]) and shared by every stream
//! of the class; a response is a small header message followed by those
//! shared bytes, and protobuf's concatenation rule makes the whole a valid
//! message. [`AdsServer`] serves `DeltaAggregatedResources` with
//! [`DeltaBody`], which frames the parts itself: tonic's encoder would copy
//! every response into a per-stream buffer that keeps its largest size for
//! the life of the stream (~1 MB per proxy at 1,000 services).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Frame;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
    aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::server::NamedService;

use super::{AdsService, XdsState};
use crate::translate::Generated;

/// gRPC path of the delta method.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Largest request accepted (a large mesh's subscription lists are long).
const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// Parts smaller than this are copied into one chunk with their
/// neighbours; larger ones go out as the shared bytes themselves.
const COALESCE: usize = 16 * 1024;

/// `resource` as field 2 of a `DeltaDiscoveryResponse`: key, length and the
/// encoded `Resource { name, version, resource }`.
pub fn resource_field(name: &str, g: &Generated) -> Bytes {
    let r = Resource {
        name: name.to_string(),
        version: g.version.clone(),
        resource: Some(g.any.clone()),
        ..Default::default()
    };
    let len = r.encoded_len();
    let mut buf = BytesMut::with_capacity(len + 11);
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(len as u64, &mut buf);
    // Encoding into a buffer with room for it cannot fail.
    let _ = r.encode(&mut buf);
    buf.freeze()
}

/// A delta response as parts: `header` (every field but `resources`) and
/// the shared [`resource_field`]s.
#[derive(Debug, Clone, Default)]
pub struct WireResponse {
    /// The encoded header message.
    pub header: Bytes,
    /// The resources, each from [`resource_field`].
    pub resources: Vec<Bytes>,
}

impl WireResponse {
    /// A response of `header`'s fields (its `resources` are ignored) and
    /// `resources`.
    pub fn new(header: &DeltaDiscoveryResponse, resources: Vec<Bytes>) -> Self {
        let header = DeltaDiscoveryResponse {
            resources: Vec::new(),
            ..header.clone()
        };
        Self {
            header: header.encode_to_vec().into(),
            resources,
        }
    }

    /// Length of the whole message.
    pub fn len(&self) -> usize {
        self.header.len() + self.resources.iter().map(Bytes::len).sum::<usize>()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response decoded (for the tonic path and tests).
    pub fn decode(&self) -> Result<DeltaDiscoveryResponse, prost::DecodeError> {
        let mut all = BytesMut::with_capacity(self.len());
        all.put_slice(&self.header);
        for r in &self.resources {
            all.put_slice(r);
        }
        DeltaDiscoveryResponse::decode(all.freeze())
    }

    /// The gRPC frame (5-byte prefix, then the message) as chunks: small
    /// parts coalesced, large ones shared.
    fn chunks(self, out: &mut VecDeque<Bytes>) {
        let mut cur = BytesMut::with_capacity(COALESCE);
        cur.put_u8(0);
        cur.put_u32(self.len() as u32);
        cur.put_slice(&self.header);
        for part in self.resources {
            if part.len() >= COALESCE {
                if !cur.is_empty() {
                    out.push_back(cur.split().freeze());
                }
                out.push_back(part);
            } else {
                if cur.len() + part.len() > COALESCE {
                    out.push_back(cur.split().freeze());
                    cur.reserve(COALESCE);
                }
                cur.put_slice(&part);
            }
        }
        if !cur.is_empty() {
            out.push_back(cur.freeze());
        }
    }
}

/// The response body of one delta stream: framed [`WireResponse`]s from the
/// stream task, then the gRPC status as trailers.
#[derive(Debug)]
pub struct DeltaBody {
    rx: mpsc::Receiver<Result<WireResponse, Status>>,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl DeltaBody {
    /// A body fed by `rx`.
    pub fn new(rx: mpsc::Receiver<Result<WireResponse, Status>>) -> Self {
        Self {
            rx,
            pending: VecDeque::new(),
            done: false,
        }
    }
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    Frame::trailers(headers)
}

impl hyper::body::Body for DeltaBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(chunk) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(resp))) => {
                resp.chunks(&mut this.pending);
                match this.pending.pop_front() {
                    Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    None => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.done = true;
                Poll::Ready(Some(Ok(trailers(&status))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(Some(Ok(trailers(&Status::ok("")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// Decodes delta requests (prost).
#[derive(Debug, Default, Clone, Copy)]
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = DeltaDiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        DeltaDiscoveryRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed DeltaDiscoveryRequest: {e}")))
    }
}

/// The ADS gRPC service: `DeltaAggregatedResources` served with
/// [`DeltaBody`], everything else by tonic's generated server.
#[derive(Debug, Clone)]
pub struct AdsServer {
    inner: AggregatedDiscoveryServiceServer<AdsService>,
    state: Arc<XdsState>,
}

impl AdsServer {
    /// Wraps tonic's server for `state`.
    pub fn new(inner: AggregatedDiscoveryServiceServer<AdsService>, state: Arc<XdsState>) -> Self {
        Self { inner, state }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != DELTA_PATH {
            return Box::pin(self.inner.call(req));
        }
        let peer = match super::peer_identity(req.extensions()) {
            Ok(peer) => peer,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let requests =
            Streaming::new_request(RequestDecoder, req.into_body(), None, Some(MAX_REQUEST));
        let (tx, rx) = mpsc::channel(super::STREAM_BUFFER);
        tokio::spawn(super::delta::run(self.state.clone(), requests, tx, peer));
        let mut resp = http::Response::new(tonic::body::Body::new(DeltaBody::new(rx)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Box::pin(async move { Ok(resp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::pack;
    use mesh_proto::envoy::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn parts_concatenate_into_the_same_response_prost_would_encode() {
        let clusters: Vec<(String, Generated)> = (0..50)
            .map(|i| {
                let name = format!("c{i}");
                let big = "x".repeat(if i == 7 { 40_000 } else { 300 });
                let g = pack(&Cluster {
                    name: name.clone(),
                    alt_stat_name: big,
                    ..Default::default()
                });
                (name, g)
            })
            .collect();
        let expected = DeltaDiscoveryResponse {
            system_version_info: "v1".into(),
            type_url: crate::translate::CLUSTER_TYPE.into(),
            nonce: "7".into(),
            removed_resources: vec!["gone".into()],
            resources: clusters
                .iter()
                .map(|(n, g)| Resource {
                    name: n.clone(),
                    version: g.version.clone(),
                    resource: Some(g.any.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wire = WireResponse::new(
            &expected,
            clusters.iter().map(|(n, g)| resource_field(n, g)).collect(),
        );
        assert_eq!(wire.decode().unwrap(), expected);
        let mut chunks = VecDeque::new();
        let len = wire.len();
        wire.chunks(&mut chunks);
        let framed: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(framed[0], 0, "uncompressed");
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
            len
        );
        assert_eq!(
            DeltaDiscoveryResponse::decode(&framed[5..]).unwrap(),
            expected
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= COALESCE || c.len() > 40_000),
            "small parts coalesced, the large one alone"
        );
    }
}
