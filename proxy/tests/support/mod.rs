//! Test support: a fake ADS server implementing the real tonic trait, and
//! builders of the Envoy resources meshd emits (docs/xds.md).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::config::endpoint::v3 as xe;
use mesh_proto::envoy::pb::envoy::config::listener::v3 as xl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::envoy::extensions::filters::http::router::v3 as xrouter;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xhcm;
use mesh_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3 as xtcp;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use mesh_proto::envoy::pb::google::protobuf as wkt;
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// A request the fake received.
#[derive(Debug, Clone)]
pub enum Req {
    Delta(DeltaDiscoveryRequest),
    Sotw(DiscoveryRequest),
}

type DeltaTx = mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>;
type SotwTx = mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>;

#[derive(Default)]
struct Shared {
    delta: Option<DeltaTx>,
    sotw: Option<SotwTx>,
    streams: usize,
}

struct Service {
    shared: Arc<Mutex<Shared>>,
    reqs: mpsc::UnboundedSender<Req>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut s = self.shared.lock().unwrap();
            s.sotw = Some(tx);
            s.streams += 1;
        }
        let mut incoming = request.into_inner();
        let reqs = self.reqs.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = incoming.message().await {
                let _ = reqs.send(Req::Sotw(r));
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut s = self.shared.lock().unwrap();
            s.delta = Some(tx);
            s.streams += 1;
        }
        let mut incoming = request.into_inner();
        let reqs = self.reqs.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = incoming.message().await {
                let _ = reqs.send(Req::Delta(r));
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// A fake ADS server on 127.0.0.1:0 that records requests and sends the
/// responses a test pushes.
pub struct FakeAds {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    reqs: mpsc::UnboundedReceiver<Req>,
}

impl FakeAds {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (reqs_tx, reqs) = mpsc::unbounded_channel();
        let svc = Service {
            shared: shared.clone(),
            reqs: reqs_tx,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self { addr, shared, reqs }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn streams(&self) -> usize {
        self.shared.lock().unwrap().streams
    }

    /// Waits (up to 10 s) for a request matching `pred`, skipping others.
    pub async fn expect(&mut self, what: &str, mut pred: impl FnMut(&Req) -> bool) -> Req {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.reqs.recv()).await {
                Ok(Some(r)) if pred(&r) => return r,
                Ok(Some(_)) => continue,
                _ => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn expect_delta(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&DeltaDiscoveryRequest) -> bool,
    ) -> DeltaDiscoveryRequest {
        match self
            .expect(what, |r| matches!(r, Req::Delta(d) if pred(d)))
            .await
        {
            Req::Delta(d) => d,
            Req::Sotw(_) => unreachable!(),
        }
    }

    pub async fn expect_sotw(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&DiscoveryRequest) -> bool,
    ) -> DiscoveryRequest {
        match self
            .expect(what, |r| matches!(r, Req::Sotw(d) if pred(d)))
            .await
        {
            Req::Sotw(d) => d,
            Req::Delta(_) => unreachable!(),
        }
    }

    /// Sends a delta response on the current stream.
    pub fn push_delta(
        &self,
        type_url: &str,
        nonce: &str,
        resources: Vec<(String, wkt::Any)>,
        removed: Vec<String>,
    ) {
        let resp = DeltaDiscoveryResponse {
            system_version_info: nonce.into(),
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources: resources
                .into_iter()
                .map(|(name, any)| Resource {
                    name,
                    version: nonce.into(),
                    resource: Some(any),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed,
            ..Default::default()
        };
        let s = self.shared.lock().unwrap();
        s.delta
            .as_ref()
            .expect("no delta stream")
            .send(Ok(resp))
            .unwrap();
    }

    /// Sends a SotW response on the current stream.
    pub fn push_sotw(&self, type_url: &str, version: &str, resources: Vec<wkt::Any>) {
        let resp = DiscoveryResponse {
            version_info: version.into(),
            type_url: type_url.into(),
            nonce: format!("n-{version}"),
            resources,
            ..Default::default()
        };
        let s = self.shared.lock().unwrap();
        s.sotw
            .as_ref()
            .expect("no sotw stream")
            .send(Ok(resp))
            .unwrap();
    }

    /// Ends the current streams with an error, as a restarting server does.
    pub fn break_streams(&self) {
        let mut s = self.shared.lock().unwrap();
        if let Some(tx) = s.delta.take() {
            let _ = tx.send(Err(Status::unavailable("restarting")));
        }
        if let Some(tx) = s.sotw.take() {
            let _ = tx.send(Err(Status::unavailable("restarting")));
        }
    }
}

// ---- resource builders ----

pub fn any<T: Message + Name>(m: &T) -> wkt::Any {
    wkt::Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

pub fn url<T: Name>() -> String {
    T::type_url()
}

pub const CDS: fn() -> String = url::<xcl::Cluster>;
pub const EDS: fn() -> String = url::<xe::ClusterLoadAssignment>;
pub const LDS: fn() -> String = url::<xl::Listener>;
pub const RDS: fn() -> String = url::<xr::RouteConfiguration>;

fn ads() -> xc::ConfigSource {
    xc::ConfigSource {
        config_source_specifier: Some(xc::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        ..Default::default()
    }
}

pub fn sock(addr: SocketAddr) -> xc::Address {
    xc::Address {
        address: Some(xc::address::Address::SocketAddress(xc::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(xc::socket_address::PortSpecifier::PortValue(
                addr.port().into(),
            )),
            ..Default::default()
        })),
    }
}

pub fn eds_cluster(name: &str, lb: xcl::cluster::LbPolicy) -> xcl::Cluster {
    xcl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(xcl::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        lb_policy: lb as i32,
        connect_timeout: Some(wkt::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

pub fn original_dst_cluster(name: &str) -> xcl::Cluster {
    xcl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: xcl::cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> xcl::Cluster {
    xcl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(xcl::cluster::ClusterDiscoveryType::Type(
            xcl::cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla(
            name,
            &endpoints.iter().map(|a| (*a, 1, 1)).collect::<Vec<_>>(),
        )),
        ..Default::default()
    }
}

/// (address, health status, weight)
pub fn cla(name: &str, endpoints: &[(SocketAddr, i32, u32)]) -> xe::ClusterLoadAssignment {
    xe::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![xe::LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|(addr, health, weight)| xe::LbEndpoint {
                    health_status: *health,
                    load_balancing_weight: Some(wkt::UInt32Value { value: *weight }),
                    host_identifier: Some(xe::lb_endpoint::HostIdentifier::Endpoint(
                        xe::Endpoint {
                            address: Some(sock(*addr)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn hcm_filter(route_name: &str) -> xl::Filter {
    let hcm = xhcm::HttpConnectionManager {
        stat_prefix: route_name.into(),
        route_specifier: Some(xhcm::http_connection_manager::RouteSpecifier::Rds(
            xhcm::Rds {
                route_config_name: route_name.into(),
                config_source: Some(ads()),
            },
        )),
        http_filters: vec![xhcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(xhcm::http_filter::ConfigType::TypedConfig(any(
                &xrouter::Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    xl::Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

pub fn tcp_filter(cluster: &str) -> xl::Filter {
    xl::Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(any(&xtcp::TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(xtcp::tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        }))),
    }
}

pub fn chain(name: &str, dst: Option<SocketAddr>, filter: xl::Filter) -> xl::FilterChain {
    xl::FilterChain {
        name: name.into(),
        filter_chain_match: dst.map(|d| xl::FilterChainMatch {
            destination_port: Some(wkt::UInt32Value {
                value: d.port().into(),
            }),
            prefix_ranges: vec![xc::CidrRange {
                address_prefix: d.ip().to_string(),
                prefix_len: Some(wkt::UInt32Value { value: 32 }),
            }],
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

pub fn listener(
    name: &str,
    bind: SocketAddr,
    original_dst: bool,
    chains: Vec<xl::FilterChain>,
    default: Option<xl::FilterChain>,
) -> xl::Listener {
    xl::Listener {
        name: name.into(),
        address: Some(sock(bind)),
        use_original_dst: Some(wkt::BoolValue {
            value: original_dst,
        }),
        filter_chains: chains,
        default_filter_chain: default,
        ..Default::default()
    }
}

pub fn route(prefix: &str, cluster: &str) -> xr::Route {
    xr::Route {
        r#match: Some(xr::RouteMatch {
            path_specifier: Some(xr::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(xr::route::Action::Route(xr::RouteAction {
            cluster_specifier: Some(xr::route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `r` (a forwarding route) also shadowing its requests to `cluster`.
pub fn with_mirror(mut r: xr::Route, cluster: &str) -> xr::Route {
    let Some(xr::route::Action::Route(ra)) = &mut r.action else {
        unreachable!("a forwarding route")
    };
    ra.request_mirror_policies
        .push(xr::route_action::RequestMirrorPolicy {
            cluster: cluster.into(),
            ..Default::default()
        });
    r
}

pub fn route_table(name: &str, domains: &[&str], routes: Vec<xr::Route>) -> xr::RouteConfiguration {
    xr::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![xr::VirtualHost {
            name: format!("{}:{name}", domains[0]),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A throwaway CA issuing SPIFFE SVIDs (what meshd's CA hands a sidecar).
pub struct TestCa(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

impl TestCa {
    /// A new self-signed root.
    pub fn new() -> Self {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Self(rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap())
    }

    /// An SVID for the SPIFFE ID `id` (client and server usage), with this
    /// CA as its only root.
    pub fn svid(&self, id: &str) -> mesh_proxy::tls::Svid {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(id).unwrap(),
        )];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.0).unwrap();
        let root: &rcgen::Certificate = self.0.as_ref();
        mesh_proxy::tls::Svid {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            roots: vec![rustls::pki_types::CertificateDer::from(root.der().to_vec())],
        }
    }

    /// [`TestCa::svid`] as the watch a proxy's runtime reads (the sender
    /// may go: the receiver keeps the last value).
    pub fn svid_rx(
        &self,
        id: &str,
    ) -> tokio::sync::watch::Receiver<Option<Arc<mesh_proxy::tls::Svid>>> {
        tokio::sync::watch::channel(Some(Arc::new(self.svid(id)))).1
    }
}

/// The `CommonTlsContext` meshd emits for ISTIO_MUTUAL: SDS secrets
/// `default` and `ROOTCA`, the peer's SPIFFE ID matched exactly when `san`
/// is given, and `alpn`.
pub fn common_tls(
    san: Option<&str>,
    alpn: &[&str],
) -> mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext {
    use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
    use mesh_proto::envoy::pb::envoy::r#type::matcher::v3 as xm;
    let sds = |name: &str| xt::SdsSecretConfig {
        name: name.into(),
        sds_config: None,
    };
    xt::CommonTlsContext {
        alpn_protocols: alpn.iter().map(|a| a.to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(
            xt::common_tls_context::ValidationContextType::CombinedValidationContext(
                xt::common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(xt::CertificateValidationContext {
                        match_typed_subject_alt_names: san
                            .map(|s| xt::SubjectAltNameMatcher {
                                san_type: xt::subject_alt_name_matcher::SanType::Uri as i32,
                                matcher: Some(xm::StringMatcher {
                                    ignore_case: false,
                                    match_pattern: Some(xm::string_matcher::MatchPattern::Exact(
                                        s.into(),
                                    )),
                                }),
                                oid: String::new(),
                            })
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds("ROOTCA")),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// A chain named `name` running `filter` behind mutual TLS (a client
/// certificate required), offering `alpn`, matched on the `tls` transport:
/// a sidecar's inbound chain.
pub fn mtls_chain(name: &str, filter: xl::Filter, alpn: &[&str]) -> xl::FilterChain {
    use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
    let mut c = chain(name, None, filter);
    c.filter_chain_match = Some(xl::FilterChainMatch {
        transport_protocol: "tls".into(),
        ..Default::default()
    });
    c.transport_socket = Some(xc::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(xc::transport_socket::ConfigType::TypedConfig(any(
            &xt::DownstreamTlsContext {
                common_tls_context: Some(common_tls(None, alpn)),
                require_client_certificate: Some(wkt::BoolValue { value: true }),
                ..Default::default()
            },
        ))),
    });
    c
}

/// `virtualInbound` on `addr` with `chains`, marked inbound (metrics report
/// as `destination`).
pub fn inbound_listener(addr: SocketAddr, chains: Vec<xl::FilterChain>) -> xl::Listener {
    let mut l = listener("virtualInbound", addr, false, chains, None);
    l.traffic_direction = xc::TrafficDirection::Inbound as i32;
    l
}

/// `cluster` speaking HTTP/2 upstream (as meshd emits for gRPC ports and
/// `h2UpgradePolicy: UPGRADE`), with `common` HTTP protocol options.
pub fn h2_cluster(
    mut cluster: xcl::Cluster,
    common: Option<xc::HttpProtocolOptions>,
) -> xcl::Cluster {
    use mesh_proto::envoy::pb::envoy::extensions::upstreams::http::v3 as xh;
    use xh::http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions};
    let opts = xh::HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(
                    xh::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        any(&opts),
    );
    cluster
}

/// A proxy config of these listeners, clusters and route tables, each
/// converted as the xDS client converts it.
pub fn proxy_config(
    listeners: Vec<xl::Listener>,
    clusters: Vec<xcl::Cluster>,
    routes: Vec<xr::RouteConfiguration>,
) -> mesh_proxy::config::ProxyConfig {
    use mesh_proxy::config::{Cluster, Listener, ProxyConfig, RouteConfig};
    let mut config = ProxyConfig::default();
    for l in listeners {
        let l = Listener::try_from(l).unwrap();
        config.listeners.insert(l.name.clone(), Arc::new(l));
    }
    for c in clusters {
        let c = Cluster::try_from(c).unwrap();
        config.clusters.insert(c.name.clone(), Arc::new(c));
    }
    for r in routes {
        let r = RouteConfig::try_from(r).unwrap();
        config.routes.insert(r.name.clone(), Arc::new(r));
    }
    config
}
