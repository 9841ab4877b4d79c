//! `ServiceEntry`: services added to the mesh's registry (external APIs,
//! VMs, services of another platform).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Port, WorkloadSelector};
use crate::networking::WorkloadEntrySpec;

/// The spec of a `ServiceEntry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Hosts of the service (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Inside or outside the mesh; `MESH_EXTERNAL` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found; `NONE` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Select WorkloadEntries (or pods) as endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces the service is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs the endpoints' certificates must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Whether a service is part of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Location {
    /// Outside the mesh: no mTLS.
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    /// Inside the mesh.
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// How a ServiceEntry's endpoints are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Resolution {
    /// Forward to the original destination address.
    #[serde(rename = "NONE")]
    None,
    /// Use the listed endpoints.
    #[serde(rename = "STATIC")]
    Static,
    /// Resolve hosts or endpoint addresses by DNS (all addresses).
    #[serde(rename = "DNS")]
    Dns,
    /// Resolve by DNS, use the first address.
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
}
