//! What the injector needs to know about the mesh it injects into.

/// Settings of the injector: where the proxy finds meshd and the CA, which
/// image it runs, and how it is started.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Image of the proxy (also runs `mesh-proxy init`).
    pub proxy_image: String,
    /// meshd's xDS address as seen from pods.
    pub xds_address: String,
    /// The CA's address as seen from pods.
    pub ca_address: String,
    /// Audience of the projected service-account token the CA accepts.
    pub ca_audience: String,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// ConfigMap holding the mesh's root certificate in every namespace.
    pub root_cert_configmap: String,
    /// Run the proxy as a native sidecar (init container with
    /// `restartPolicy: Always`, Kubernetes ≥ 1.29) instead of a container.
    pub native_sidecar: bool,
    /// uid and gid the proxy runs as; interception excludes its traffic.
    pub proxy_uid: u32,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: format!("mesh/mesh-proxy:{}", env!("CARGO_PKG_VERSION")),
            xds_address: "http://meshd.mesh-system.svc:15010".into(),
            ca_address: "https://meshd.mesh-system.svc:15012".into(),
            ca_audience: "mesh-ca".into(),
            trust_domain: "cluster.local".into(),
            root_cert_configmap: "mesh-ca-root-cert".into(),
            native_sidecar: false,
            proxy_uid: 1337,
        }
    }
}

/// Annotation and label keys the injector reads and writes.
pub mod annotations {
    /// Records what was injected (JSON); its presence makes injection a no-op.
    pub const STATUS: &str = "sidecar.mesh.dev/status";
    /// Opt-out (`"false"`) in the mesh's own group.
    pub const INJECT: &str = "sidecar.mesh.dev/inject";
    /// Istio's opt-out, honoured so existing manifests keep their meaning.
    pub const ISTIO_INJECT: &str = "sidecar.istio.io/inject";
    /// Per-pod override of native sidecar mode (`"true"`/`"false"`).
    pub const NATIVE_SIDECAR: &str = "sidecar.mesh.dev/native-sidecar";
    /// Istio's traffic annotations, read as Istio reads them.
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    /// Inbound ports never redirected.
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    /// Outbound ports never redirected.
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    /// Outbound CIDRs redirected (`*` for all).
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    /// Outbound CIDRs never redirected.
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
}
