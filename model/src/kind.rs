//! The resource kinds the mesh understands and the names kubectl-style tools
//! accept for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The Istio networking API group.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// The Istio security API group.
pub const SECURITY_GROUP: &str = "security.istio.io";
/// The mesh's own policy API group (rate limiting).
pub const POLICY_GROUP: &str = "policy.mesh.dev";

/// One resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `networking.istio.io` VirtualService: routing rules.
    VirtualService,
    /// `networking.istio.io` DestinationRule: subsets and traffic policy.
    DestinationRule,
    /// `networking.istio.io` ServiceEntry: services added to the registry.
    ServiceEntry,
    /// `networking.istio.io` WorkloadEntry: a non-Kubernetes workload.
    WorkloadEntry,
    /// `networking.istio.io` Gateway: listeners of an ingress/egress gateway.
    Gateway,
    /// `networking.istio.io` Sidecar: the scope of a proxy's configuration.
    Sidecar,
    /// `security.istio.io` PeerAuthentication: mTLS mode.
    PeerAuthentication,
    /// `security.istio.io` AuthorizationPolicy: access control.
    AuthorizationPolicy,
    /// `security.istio.io` RequestAuthentication: JWT validation.
    RequestAuthentication,
    /// `policy.mesh.dev` RateLimitPolicy: the mesh's local rate limits.
    RateLimitPolicy,
}

/// The name given to [`Kind::from_str`] is no known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource kind {:?} (expected one of: {})", .0, kind_list())]
pub struct UnknownKind(pub String);

/// The kind names, comma-separated, for messages.
pub(crate) fn kind_list() -> String {
    Kind::ALL.map(|k| k.as_str()).join(", ")
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 10] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::RateLimitPolicy,
    ];

    /// The kind as written in `kind:`, e.g. `VirtualService`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Gateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::RateLimitPolicy => "RateLimitPolicy",
        }
    }

    /// The API group, e.g. `networking.istio.io`.
    pub fn api_group(self) -> &'static str {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Gateway
            | Kind::Sidecar => NETWORKING_GROUP,
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                SECURITY_GROUP
            }
            Kind::RateLimitPolicy => POLICY_GROUP,
        }
    }

    /// The versions of [`Kind::api_group`] accepted in `apiVersion`, newest first.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self.api_group() {
            NETWORKING_GROUP => &["v1", "v1beta1", "v1alpha3"],
            SECURITY_GROUP => &["v1", "v1beta1"],
            _ => &["v1alpha1"],
        }
    }

    /// The preferred `apiVersion`, e.g. `networking.istio.io/v1`.
    pub fn preferred_api_version(self) -> String {
        format!("{}/{}", self.api_group(), self.api_versions()[0])
    }

    /// Whether `api_version` (`group/version`) is accepted for this kind.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        api_version
            .split_once('/')
            .is_some_and(|(g, v)| g == self.api_group() && self.api_versions().contains(&v))
    }

    /// The lowercase plural, as in a Kubernetes resource path (`virtualservices`).
    pub fn plural(self) -> String {
        let mut s = self.as_str().to_ascii_lowercase();
        if s.ends_with('y') && !s.ends_with("ay") {
            s.pop();
            s.push_str("ies");
        } else {
            s.push('s');
        }
        s
    }

    /// The short name kubectl accepts (`vs`, `dr`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Kind::VirtualService => "vs",
            Kind::DestinationRule => "dr",
            Kind::ServiceEntry => "se",
            Kind::WorkloadEntry => "we",
            Kind::Gateway => "gw",
            Kind::Sidecar => "sidecar",
            Kind::PeerAuthentication => "pa",
            Kind::AuthorizationPolicy => "ap",
            Kind::RequestAuthentication => "ra",
            Kind::RateLimitPolicy => "rlp",
        }
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the kind (any case), its plural, its short name, and a
    /// `kind.group` qualified form such as `virtualservices.networking.istio.io`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, group) = match lower.split_once('.') {
            Some((n, g)) => (n, Some(g)),
            None => (lower.as_str(), None),
        };
        Kind::ALL
            .into_iter()
            .find(|k| {
                let kind = k.as_str().to_ascii_lowercase();
                (name == kind || name == k.plural() || name == k.short_name())
                    && group.is_none_or(|g| g == k.api_group())
            })
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_names_resolve_to_kinds() {
        for (name, kind) in [
            ("VirtualService", Kind::VirtualService),
            ("virtualservice", Kind::VirtualService),
            ("virtualservices", Kind::VirtualService),
            ("vs", Kind::VirtualService),
            ("VS", Kind::VirtualService),
            ("dr", Kind::DestinationRule),
            ("destinationrules", Kind::DestinationRule),
            ("se", Kind::ServiceEntry),
            ("we", Kind::WorkloadEntry),
            ("gw", Kind::Gateway),
            ("gateways", Kind::Gateway),
            ("sidecars", Kind::Sidecar),
            ("pa", Kind::PeerAuthentication),
            ("ap", Kind::AuthorizationPolicy),
            ("authorizationpolicies", Kind::AuthorizationPolicy),
            ("ra", Kind::RequestAuthentication),
            ("rlp", Kind::RateLimitPolicy),
            ("ratelimitpolicies.policy.mesh.dev", Kind::RateLimitPolicy),
            ("virtualservices.networking.istio.io", Kind::VirtualService),
        ] {
            assert_eq!(name.parse::<Kind>(), Ok(kind), "{name}");
        }
    }

    #[test]
    fn unknown_kind_names_the_input_and_the_choices() {
        let err = "pods".parse::<Kind>().unwrap_err().to_string();
        assert!(
            err.starts_with("unknown resource kind \"pods\" (expected one of: VirtualService,"),
            "{err}"
        );
        assert!("vs.security.istio.io".parse::<Kind>().is_err());
    }

    #[test]
    fn api_versions_follow_each_group() {
        assert!(Kind::VirtualService.accepts_api_version("networking.istio.io/v1alpha3"));
        assert!(Kind::PeerAuthentication.accepts_api_version("security.istio.io/v1beta1"));
        assert!(!Kind::PeerAuthentication.accepts_api_version("networking.istio.io/v1"));
        assert!(Kind::RateLimitPolicy.accepts_api_version("policy.mesh.dev/v1alpha1"));
        assert_eq!(
            Kind::Gateway.preferred_api_version(),
            "networking.istio.io/v1"
        );
        assert_eq!(Kind::AuthorizationPolicy.plural(), "authorizationpolicies");
    }
}
