//! SPIFFE IDs of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

/// A workload identity in the mesh's Kubernetes-style SPIFFE layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a valid mesh SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("SPIFFE ID {0:?} must start with \"spiffe://\"")]
    Scheme(String),
    /// The trust domain is empty or has characters the SPIFFE spec forbids.
    #[error("SPIFFE ID {0:?}: trust domain must be lowercase letters, digits, '.', '-' or '_'")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE ID {0:?}: path must be /ns/<namespace>/sa/<service-account>")]
    Path(String),
    /// A path segment is empty or has characters the SPIFFE spec forbids.
    #[error("SPIFFE ID {id:?}: segment {segment:?} must be letters, digits, '.', '-' or '_'")]
    Segment {
        /// The whole ID.
        id: String,
        /// The offending segment.
        segment: String,
    },
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account of the workload.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::Path(s.to_string()))?;
        if !valid_trust_domain(td) {
            return Err(SpiffeIdError::TrustDomain(s.to_string()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_kw, ns, sa_kw, sa] = parts.as_slice() else {
            return Err(SpiffeIdError::Path(s.to_string()));
        };
        if *ns_kw != "ns" || *sa_kw != "sa" {
            return Err(SpiffeIdError::Path(s.to_string()));
        }
        for seg in [ns, sa] {
            if !valid_segment(seg) {
                return Err(SpiffeIdError::Segment {
                    id: s.to_string(),
                    segment: seg.to_string(),
                });
            }
        }
        Ok(SpiffeId {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
    }

    #[test]
    fn rejects_malformed_ids_with_the_reason() {
        for (input, want) in [
            ("http://cluster.local/ns/a/sa/b", "must start with"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain"),
            ("spiffe://cluster.local/ns/a", "path must be"),
            ("spiffe://cluster.local/namespace/a/sa/b", "path must be"),
            ("spiffe://cluster.local/ns//sa/b", "segment"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "path must be"),
            ("spiffe://cluster.local/ns/a/sa/b c", "segment"),
        ] {
            let err = input.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
