//! `Sidecar`: the scope of a proxy's configuration (which hosts it may reach,
//! which ports it accepts).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Port, WorkloadSelector};

/// The spec of a `Sidecar`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads it applies to; the whole namespace when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
    /// Outbound scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    /// What happens to traffic to unknown hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    /// Port accepting traffic.
    pub port: Port,
    /// Address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where traffic goes (`127.0.0.1:8080`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
}

/// An outbound scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    /// Port; all ports when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Reachable hosts, `namespace/host` (`./*`, `istio-system/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Policy for traffic to hosts outside the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// The mode; `ALLOW_ANY` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
}

/// Policy for traffic to unknown hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OutboundTrafficMode {
    /// Block it.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    /// Pass it through.
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

/// How traffic reaches a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CaptureMode {
    /// The mesh default.
    #[serde(rename = "DEFAULT")]
    Default,
    /// Redirected by interception rules.
    #[serde(rename = "IPTABLES")]
    IpTables,
    /// Addressed explicitly.
    #[serde(rename = "NONE")]
    None,
}
