//! The service registry on Kubernetes: Services (ClusterIP as the VIP,
//! ports with their names and `appProtocol`), their EndpointSlices
//! (ready / serving-while-terminating / neither → HEALTHY / DRAINING /
//! UNHEALTHY), the Pods behind them (labels, service account, whether a
//! sidecar was injected) and the Nodes those run on (locality from
//! `topology.kubernetes.io/region` and `/zone`).
//!
//! Headless Services (`clusterIP: None`) have no VIP that clients dial:
//! kube-dns answers with the endpoints' own addresses. Each endpoint
//! address becomes a service of its own, named as kube-dns names it
//! (`<hostname>.<svc>.<ns>.svc.<domain>` for a StatefulSet pod, else
//! `<a-b-c-d>.<svc>.<ns>.svc.<domain>`) with the address as its VIP, so
//! the outbound listener gets a chain per endpoint address and port
//! (`prefix_ranges: [<address>/32]`) to a cluster holding just that
//! endpoint (mTLS to its pod when injected): what a client dialling that
//! pod reaches, as Istio's per-endpoint chains for headless services do.
//! The headless Service itself stays (VirtualService and DestinationRule
//! hosts, HTTP routing by its name) with a VIP from meshd's allocator that
//! no DNS returns. An address already taken by another service is skipped
//! (a ClusterIP first, then pod-hostname names, then by name).
//!
//! Four reflectors keep the objects; any change recomputes the services
//! (cheap next to an xDS push) and hands them whole to
//! [`Workloads::set_platform_services`], which triggers the usual debounced
//! snapshot rebuild.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ::kube::Client;
use ::kube::api::Api;
use ::kube::runtime::reflector::{self, ObjectRef, Store};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{Notify, watch};

use crate::registry::{
    Endpoint, Health, PendingService, Protocol, Service, ServicePort, TLS_MODE_LABEL, Workloads,
};
use crate::store::ConfigStore;

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node label giving the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label giving the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Read-only views of the reflected objects.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Services.
    pub services: Store<KubeService>,
    /// EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Pods.
    pub pods: Store<Pod>,
    /// Nodes.
    pub nodes: Store<Node>,
}

/// The running registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The reflected objects.
    pub stores: Stores,
    /// Turns true once every kind has been listed and the services built
    /// from them handed to the snapshot.
    pub ready: watch::Receiver<bool>,
}

/// Spawns the four reflectors and the task that turns their contents into
/// registry services (first after all four have listed). Returns the
/// registry and the tasks.
pub fn spawn(
    client: &Client,
    cluster_domain: String,
    workloads: Arc<Workloads>,
) -> (Registry, Vec<tokio::task::JoinHandle<()>>) {
    spawn_with_config(client, cluster_domain, workloads, None)
}

/// [`spawn`], and with `config` (meshd's store of custom resources) the
/// Pods that ServiceEntries select with their `workloadSelector` become
/// endpoints of those entries ([`super::selector`]); the services are
/// rebuilt when the Kubernetes objects or the config change.
pub fn spawn_with_config(
    client: &Client,
    cluster_domain: String,
    workloads: Arc<Workloads>,
    config: Option<Arc<dyn ConfigStore>>,
) -> (Registry, Vec<tokio::task::JoinHandle<()>>) {
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let (services, t) = reflect::<KubeService>(Api::all(client.clone()), changed.clone());
    tasks.push(t);
    let (slices, t) = reflect::<EndpointSlice>(Api::all(client.clone()), changed.clone());
    tasks.push(t);
    let (pods, t) = reflect::<Pod>(Api::all(client.clone()), changed.clone());
    tasks.push(t);
    let (nodes, t) = reflect::<Node>(Api::all(client.clone()), changed.clone());
    tasks.push(t);
    let stores = Stores {
        services,
        slices,
        pods,
        nodes,
    };
    let s = stores.clone();
    let (ready_tx, ready) = watch::channel(false);
    // Subscribed before the first list, so no config change is missed.
    let mut config_events = config.as_ref().map(|c| c.watch());
    tasks.push(tokio::spawn(async move {
        for ready in [
            s.services.wait_until_ready().await,
            s.slices.wait_until_ready().await,
            s.pods.wait_until_ready().await,
            s.nodes.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        tracing::info!(
            services = s.services.len(),
            pods = s.pods.len(),
            "Kubernetes registry listed"
        );
        loop {
            let mut services = build(&s, &cluster_domain);
            if let Some(config) = &config {
                let entries = selecting_entries(config.as_ref()).await;
                services.extend(super::selector::service_entry_services(&entries, &s));
            }
            tracing::debug!(services = services.len(), "Kubernetes registry updated");
            workloads.set_platform_services(services);
            ready_tx.send_replace(true);
            match config_events.as_mut() {
                Some(events) => tokio::select! {
                    () = changed.notified() => {}
                    ev = events.recv() => {
                        if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            config_events = None;
                        }
                    }
                },
                None => changed.notified().await,
            }
        }
    }));
    (Registry { stores, ready }, tasks)
}

/// The ServiceEntries and WorkloadEntries of `config` (the objects a
/// `workloadSelector` over Pods needs); objects that do not decode are
/// left out (the snapshot reports them).
async fn selecting_entries(config: &dyn ConfigStore) -> Vec<mesh_model::Resource> {
    let mut out = Vec::new();
    for kind in [
        mesh_model::Kind::ServiceEntry,
        mesh_model::Kind::WorkloadEntry,
    ] {
        match config.list(Some(kind.as_str()), None).await {
            Ok(objects) => out.extend(
                objects
                    .iter()
                    .filter_map(|o| crate::documents::decode(o).ok()),
            ),
            Err(error) => {
                tracing::warn!(kind = kind.as_str(), %error, "listing config for workloadSelector over Pods failed")
            }
        }
    }
    out
}

fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: ::kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                // Init/InitApply only fill the buffer; the swap is InitDone.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(
                    kind = %K::kind(&()),
                    error = %e,
                    "Kubernetes watch failed; retrying"
                ),
            }
        }
    });
    (reader, task)
}

/// The registry services of everything in `stores`.
pub fn build(stores: &Stores, cluster_domain: &str) -> Vec<PendingService> {
    let mut slices: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for s in stores.slices.state() {
        let (Some(ns), Some(svc)) = (
            s.metadata.namespace.clone(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned(),
        ) else {
            continue;
        };
        slices.entry((ns, svc)).or_default().push(s);
    }
    let mut out = Vec::new();
    let mut per_endpoint = Vec::new();
    for svc in stores.services.state() {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.clone(), svc.metadata.name.clone())
        else {
            continue;
        };
        let empty = Vec::new();
        let its = slices.get(&(ns, name)).unwrap_or(&empty);
        if let Some((service, endpoints)) = service_of(&svc, its, stores, cluster_domain) {
            out.push(service);
            per_endpoint.extend(endpoints);
        }
    }
    // One service per address: a ClusterIP wins, then a name from the
    // pod's hostname (a StatefulSet's) over an address-derived one, then
    // the first host in order.
    let mut taken: BTreeSet<Ipv4Addr> = out.iter().filter_map(|p| p.address).collect();
    per_endpoint.sort_by_cached_key(|p| {
        let label = p.service.host.split('.').next().unwrap_or_default();
        let from_address = p
            .address
            .is_some_and(|ip| label == ip.to_string().replace('.', "-"));
        (from_address, p.service.host.clone())
    });
    for p in per_endpoint {
        match p.address {
            Some(ip) if taken.insert(ip) => out.push(p),
            _ => tracing::debug!(host = %p.service.host, "headless endpoint address already taken"),
        }
    }
    out.sort_by(|a, b| a.service.host.cmp(&b.service.host));
    out
}

/// The services of a headless Service's endpoints: one per IPv4 address,
/// named as kube-dns names it, with the address as its VIP.
fn endpoint_services(
    umbrella: &Service,
    name: &str,
    ns: &str,
    cluster_domain: &str,
    endpoints: &[(Endpoint, Option<String>)],
) -> Vec<PendingService> {
    endpoints
        .iter()
        .filter_map(|(ep, hostname)| {
            let ip: Ipv4Addr = ep.address.parse().ok()?;
            let label = hostname
                .clone()
                .unwrap_or_else(|| ep.address.replace('.', "-"));
            Some(PendingService {
                service: Service {
                    host: format!("{label}.{name}.{ns}.svc.{cluster_domain}"),
                    namespace: ns.to_string(),
                    vip: Ipv4Addr::UNSPECIFIED,
                    ports: umbrella.ports.clone(),
                    endpoints: vec![ep.clone()],
                    external: false,
                    source: format!("Service {ns}/{name} (headless, endpoint {ip})"),
                },
                address: Some(ip),
            })
        })
        .collect()
}

/// One Service with its endpoints, and for a headless one the services of
/// its endpoint addresses; `None` for kinds the mesh does not route
/// (ExternalName).
fn service_of(
    svc: &KubeService,
    slices: &[Arc<EndpointSlice>],
    stores: &Stores,
    cluster_domain: &str,
) -> Option<(PendingService, Vec<PendingService>)> {
    let ns = svc.metadata.namespace.as_deref()?;
    let name = svc.metadata.name.as_deref()?;
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // Headless services ("None") get a VIP from meshd's allocator, and
    // their endpoints services of their own (see the module doc).
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let address: Option<Ipv4Addr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let number = u32::try_from(p.port).unwrap_or_default();
            ServicePort {
                number,
                name: p.name.clone().unwrap_or_else(|| format!("port-{number}")),
                protocol: protocol_of(p.app_protocol.as_deref(), p.name.as_deref()),
                target_port: match &p.target_port {
                    Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
                    // A named target port is resolved per endpoint by the slices.
                    _ => None,
                },
            }
        })
        .collect();
    let mut endpoints = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let slice_ports: BTreeMap<String, u32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u32::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        // A single unnamed service port matches the slice's unnamed port.
        let ports_by_service_name: BTreeMap<String, u32> = ports
            .iter()
            .filter_map(|sp| {
                let key = if slice_ports.contains_key(&sp.name) {
                    sp.name.clone()
                } else if ports.len() == 1 {
                    String::new()
                } else {
                    return None;
                };
                Some((sp.name.clone(), *slice_ports.get(&key)?))
            })
            .collect();
        for ep in &slice.endpoints {
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let pod_ns = r.namespace.as_deref().unwrap_or(ns);
                    stores
                        .pods
                        .get(&ObjectRef::new(r.name.as_deref()?).within(pod_ns))
                });
            let mut labels = pod
                .as_ref()
                .and_then(|p| p.metadata.labels.clone())
                .unwrap_or_default();
            if pod.as_deref().is_some_and(has_sidecar) {
                labels.insert(TLS_MODE_LABEL.into(), "istio".into());
            }
            let service_account = pod
                .as_ref()
                .and_then(|p| p.spec.as_ref()?.service_account_name.clone());
            let locality = ep
                .node_name
                .as_deref()
                .and_then(|n| stores.nodes.get(&ObjectRef::new(n)))
                .and_then(|n| locality_of(&n))
                .or_else(|| ep.zone.clone().map(|z| format!("/{z}")));
            for address in &ep.addresses {
                endpoints.push((
                    Endpoint {
                        address: address.clone(),
                        ports: ports_by_service_name.clone(),
                        labels: labels.clone(),
                        locality: locality.clone(),
                        weight: 1,
                        health: health_of(ep.conditions.as_ref()),
                        service_account: service_account.clone(),
                        namespace: ns.to_string(),
                        source: format!(
                            "EndpointSlice {ns}/{}",
                            slice.metadata.name.as_deref().unwrap_or_default()
                        ),
                    },
                    ep.hostname.clone(),
                ));
            }
        }
    }
    let service = Service {
        host: format!("{name}.{ns}.svc.{cluster_domain}"),
        namespace: ns.to_string(),
        vip: Ipv4Addr::UNSPECIFIED,
        ports,
        endpoints: endpoints.iter().map(|(e, _)| e.clone()).collect(),
        external: false,
        source: format!("Service {ns}/{name}"),
    };
    let per_endpoint = if headless {
        endpoint_services(&service, name, ns, cluster_domain, &endpoints)
    } else {
        Vec::new()
    };
    Some((PendingService { service, address }, per_endpoint))
}

/// `appProtocol` first (with Kubernetes' standard `kubernetes.io/h2c`),
/// else Istio's port-name prefix rule.
pub fn protocol_of(app_protocol: Option<&str>, name: Option<&str>) -> Protocol {
    match app_protocol {
        Some("kubernetes.io/h2c") => Protocol::Http2,
        Some("kubernetes.io/ws" | "kubernetes.io/wss") => Protocol::Tcp,
        other => Protocol::detect(other, name),
    }
}

/// EndpointSlice conditions to health: ready → HEALTHY; not ready but
/// still serving while terminating → DRAINING; else UNHEALTHY. An absent
/// `ready` means ready (the API's documented default).
pub fn health_of(c: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> Health {
    let Some(c) = c else {
        return Health::Healthy;
    };
    if c.ready.unwrap_or(true) {
        Health::Healthy
    } else if c.serving == Some(true) && c.terminating == Some(true) {
        Health::Draining
    } else {
        Health::Unhealthy
    }
}

/// `region/zone` from a Node's topology labels.
pub fn locality_of(node: &Node) -> Option<String> {
    let labels = node.metadata.labels.as_ref()?;
    let region = labels.get(REGION_LABEL).map(String::as_str).unwrap_or("");
    let zone = labels.get(ZONE_LABEL).map(String::as_str).unwrap_or("");
    (!region.is_empty() || !zone.is_empty()).then(|| format!("{region}/{zone}"))
}

/// Whether the injector gave the pod a sidecar (its status annotation, or
/// a `mesh-proxy` container for pods injected by hand).
pub fn has_sidecar(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(mesh_inject::annotations::STATUS));
    let spec = pod.spec.as_ref();
    let container = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == "mesh-proxy")
    });
    annotated || container
}
