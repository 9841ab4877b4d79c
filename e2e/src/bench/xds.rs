//! A static state-of-the-world ADS server: each node id gets a fixed set
//! of resources, so our proxies and Envoy are configured by exactly the same
//! Listener / RouteConfiguration / Cluster / ClusterLoadAssignment messages.
//! A NACK is recorded (the benchmark refuses to run on a rejected config).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::Stream;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_proto::envoy::pb::google::protobuf as wkt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// The one version every resource set is served at.
const VERSION: &str = "1";

/// Resources of one node: type URL → (name, resource).
pub type NodeResources = BTreeMap<String, Vec<(String, wkt::Any)>>;

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<String, NodeResources>,
    nacks: Vec<String>,
    acks: BTreeSet<(String, String)>,
}

/// Handle on a running static ADS server.
#[derive(Debug, Clone)]
pub struct StaticAds {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Service {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic elsewhere cannot leave State half-updated in a way that
    // matters to a benchmark: keep serving.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What to send for one request, or None (an ACK of what was sent).
fn answer(
    resources: &NodeResources,
    req: &DiscoveryRequest,
    sent_names: &mut BTreeMap<String, Vec<String>>,
    nonce: u64,
) -> Option<DiscoveryResponse> {
    let names = req.resource_names.clone();
    let already = sent_names.get(&req.type_url) == Some(&names);
    if req.version_info == VERSION && already {
        return None;
    }
    let all = resources.get(&req.type_url).cloned().unwrap_or_default();
    let picked = all
        .into_iter()
        .filter(|(name, _)| names.is_empty() || names.contains(name))
        .map(|(_, any)| any)
        .collect();
    sent_names.insert(req.type_url.clone(), names);
    Some(DiscoveryResponse {
        version_info: VERSION.into(),
        resources: picked,
        type_url: req.type_url.clone(),
        nonce: nonce.to_string(),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut incoming = request.into_inner();
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut node_id = String::new();
            let mut sent = BTreeMap::new();
            let mut nonce = 0u64;
            while let Ok(Some(req)) = incoming.message().await {
                if let Some(node) = &req.node {
                    node_id = node.id.clone();
                }
                let reply = {
                    let mut st = lock(&state);
                    if let Some(err) = &req.error_detail {
                        st.nacks
                            .push(format!("{node_id} {}: {}", req.type_url, err.message));
                        None
                    } else {
                        if req.version_info == VERSION {
                            st.acks.insert((node_id.clone(), req.type_url.clone()));
                        }
                        let resources = st.nodes.get(&node_id).cloned().unwrap_or_default();
                        nonce += 1;
                        answer(&resources, &req, &mut sent, nonce)
                    }
                };
                if let Some(resp) = reply
                    && tx.send(Ok(resp)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "the benchmark's static ADS server speaks state-of-the-world only",
        ))
    }
}

impl StaticAds {
    /// Serves on `listener` until the process exits.
    pub fn spawn(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let svc = Service {
            state: state.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Ok(Self { addr, state })
    }

    /// Sets the resources served to `node_id` (before it connects).
    pub fn set_node(&self, node_id: &str, resources: NodeResources) {
        lock(&self.state).nodes.insert(node_id.into(), resources);
    }

    /// NACKs received so far (`node type: message`).
    pub fn nacks(&self) -> Vec<String> {
        lock(&self.state).nacks.clone()
    }

    /// Type URLs `node_id` has ACKed.
    pub fn acked(&self, node_id: &str) -> Vec<String> {
        lock(&self.state)
            .acks
            .iter()
            .filter(|(n, _)| n == node_id)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(name: &str) -> (String, wkt::Any) {
        (
            name.into(),
            wkt::Any {
                type_url: "t".into(),
                value: name.as_bytes().to_vec(),
            },
        )
    }

    #[test]
    fn answers_new_subscriptions_and_stays_quiet_on_acks() {
        let res = NodeResources::from([("t".to_owned(), vec![any("a"), any("b")])]);
        let mut sent = BTreeMap::new();
        let first = DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        };
        let r = answer(&res, &first, &mut sent, 1).unwrap();
        assert_eq!(r.resources.len(), 2);
        let ack = DiscoveryRequest {
            version_info: VERSION.into(),
            ..first.clone()
        };
        assert!(answer(&res, &ack, &mut sent, 2).is_none());
        // A named subscription (EDS/RDS) gets only those names, even after
        // an ACK of the wildcard.
        let named = DiscoveryRequest {
            resource_names: vec!["b".into()],
            ..ack
        };
        let r = answer(&res, &named, &mut sent, 3).unwrap();
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.resources[0].value, b"b");
    }
}
