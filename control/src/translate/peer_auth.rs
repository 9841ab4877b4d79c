//! The inbound mTLS mode of a proxy's port, from PeerAuthentication as Istio
//! resolves it: a workload policy (selector matching the proxy's labels,
//! port-level setting first) over the namespace policy over the mesh-wide
//! policy in the root namespace; `UNSET` inherits from the next level, and
//! with nothing set the mode is PERMISSIVE.

use mesh_model::Resource;
use mesh_model::analysis::ROOT_NAMESPACE;
use mesh_model::common::labels_match;
use mesh_model::security::{MtlsMode, PeerAuthenticationSpec};

use crate::node::ProxyNode;

/// The effective mode (never `Unset`) of `port` on `proxy`.
pub fn inbound_mode(config: &[Resource], proxy: &ProxyNode, port: u32) -> MtlsMode {
    let mut workload = None;
    let mut namespace = None;
    let mut mesh = None;
    for r in config {
        let Resource::PeerAuthentication(pa) = r else {
            continue;
        };
        let spec: &PeerAuthenticationSpec = &pa.spec;
        let ns = r.namespace();
        match &spec.selector {
            Some(sel)
                if ns == proxy.namespace && labels_match(&sel.match_labels, &proxy.labels) =>
            {
                let port_mode = spec.port_level_mtls.get(&port).and_then(|m| m.mode);
                let mode = port_mode
                    .filter(|m| *m != MtlsMode::Unset)
                    .or(spec.mtls.as_ref().and_then(|m| m.mode));
                workload = workload.or(mode);
            }
            Some(_) => {}
            None if ns == proxy.namespace => {
                namespace = namespace.or(spec.mtls.as_ref().and_then(|m| m.mode))
            }
            None if ns == ROOT_NAMESPACE => mesh = mesh.or(spec.mtls.as_ref().and_then(|m| m.mode)),
            None => {}
        }
    }
    [workload, namespace, mesh]
        .into_iter()
        .flatten()
        .find(|m| *m != MtlsMode::Unset)
        .unwrap_or(MtlsMode::Permissive)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn proxy() -> ProxyNode {
        let mut p = crate::translate::test_support::proxy();
        p.namespace = "shop".into();
        p.labels = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
        p
    }

    fn config(yaml: &str) -> Vec<Resource> {
        mesh_model::parse_documents(yaml, "test.yaml").unwrap()
    }

    const MESH_STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

    #[test]
    fn nothing_set_is_permissive_and_mesh_wide_applies_everywhere() {
        assert_eq!(inbound_mode(&[], &proxy(), 9080), MtlsMode::Permissive);
        assert_eq!(
            inbound_mode(&config(MESH_STRICT), &proxy(), 9080),
            MtlsMode::Strict
        );
    }

    #[test]
    fn workload_port_level_beats_workload_beats_namespace_beats_mesh() {
        let yaml = format!(
            "{MESH_STRICT}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: ns, namespace: shop}}
spec: {{mtls: {{mode: DISABLE}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: reviews, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  mtls: {{mode: UNSET}}
  portLevelMtls: {{9090: {{mode: STRICT}}}}
"
        );
        let cfg = config(&yaml);
        // 9080: the workload policy is UNSET, so the namespace's DISABLE wins.
        assert_eq!(inbound_mode(&cfg, &proxy(), 9080), MtlsMode::Disable);
        assert_eq!(inbound_mode(&cfg, &proxy(), 9090), MtlsMode::Strict);
        // Another namespace only sees the mesh-wide policy.
        let mut other = proxy();
        other.namespace = "other".into();
        assert_eq!(inbound_mode(&cfg, &other, 9080), MtlsMode::Strict);
        // A selector that does not match is ignored.
        let mut ratings = proxy();
        ratings.labels.insert("app".into(), "ratings".into());
        assert_eq!(inbound_mode(&cfg, &ratings, 9090), MtlsMode::Disable);
    }
}
