//! `RateLimitPolicy` (`policy.mesh.dev/v1alpha1`): the mesh's local rate limits.
//!
//! Istio has no first-class rate limiting; this kind is the mesh's own. It is
//! enforced by each selected workload's proxy on inbound requests, with a
//! token bucket per key, local to each proxy instance (no shared quota
//! service):
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: RateLimitPolicy
//! metadata: {name: reviews-limit, namespace: default}
//! spec:
//!   selector: {matchLabels: {app: reviews}}
//!   limits:
//!   - name: per-caller
//!     match: {pathPrefix: /reviews}
//!     key: SOURCE_PRINCIPAL
//!     tokenBucket: {maxTokens: 100, tokensPerFill: 10, fillInterval: 1s}
//!     responseCode: 429
//! ```
//!
//! - `selector` picks the workloads (all of the namespace when absent).
//! - Each limit applies to requests its `match` selects (all when absent):
//!   `pathPrefix` on the request path, `routeName` on the name of the
//!   VirtualService HTTP route that matched, `sourcePrincipals` on the
//!   caller's SPIFFE identity (`cluster.local/ns/default/sa/productpage`,
//!   `*` suffix/prefix wildcards as in AuthorizationPolicy). All set fields
//!   must match.
//! - `key` says what gets its own bucket: `WORKLOAD` (one bucket for the
//!   proxy, the default), `ROUTE` (one per matched route name), or
//!   `SOURCE_PRINCIPAL` (one per caller identity).
//! - A bucket starts full with `maxTokens`, every request takes one token, and
//!   `tokensPerFill` tokens (capped at `maxTokens`) come back every
//!   `fillInterval`. A request finding the bucket empty gets `responseCode`
//!   (429 by default) with header `x-mesh-ratelimited: <policy>/<limit>`.
//! - When several limits match, each takes a token; the first exhausted denies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Selector;

/// The spec of a `RateLimitPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// Workloads enforcing the limits; the whole namespace when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// The limits (at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<RateLimit>,
}

/// One limit: which requests, keyed how, how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Limit name, a DNS-1123 label unique within the policy.
    #[serde(default)]
    pub name: String,
    /// Which requests count; all when absent.
    #[serde(rename = "match")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<RateLimitMatch>,
    /// What gets its own bucket; `WORKLOAD` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// The bucket.
    pub token_bucket: TokenBucket,
    /// Status answered when limited, 400..=599; 429 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u32>,
}

/// Request conditions; all set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitMatch {
    /// The request path starts with this (must start with `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The name of the VirtualService HTTP route that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_name: Option<String>,
    /// Caller identities (`*` wildcards at either end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_principals: Vec<String>,
}

/// What gets its own token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitKey {
    /// One bucket per proxy.
    #[serde(rename = "WORKLOAD")]
    Workload,
    /// One bucket per matched route name.
    #[serde(rename = "ROUTE")]
    Route,
    /// One bucket per caller identity.
    #[serde(rename = "SOURCE_PRINCIPAL")]
    SourcePrincipal,
}

/// A token bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size, > 0: the burst allowed.
    pub max_tokens: u32,
    /// Tokens added per interval, > 0.
    pub tokens_per_fill: u32,
    /// Refill interval, a positive duration (`1s`).
    pub fill_interval: String,
}

/// The status answered to a rate-limited request when `responseCode` is absent.
pub const DEFAULT_RESPONSE_CODE: u32 = 429;
