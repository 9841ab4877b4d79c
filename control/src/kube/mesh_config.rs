//! The mounted `mesh-config` ConfigMap (`--mesh-config-dir`): one file per
//! key, as Kubernetes mounts ConfigMaps. meshd reads the keys it uses and
//! logs the others it does not act on yet.

use std::path::Path;

/// The root-cert ConfigMap's name when the mesh config names none.
pub const DEFAULT_ROOT_CERT_CONFIGMAP: &str = "mesh-ca-root-cert";

/// Keys of the chart's `mesh-config` that meshd does not act on yet.
const NOT_USED: [&str; 3] = ["mtlsMode", "outboundTrafficPolicy", "accessLogEnabled"];

/// The values meshd takes from the mesh config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// `trustDomain`.
    pub trust_domain: Option<String>,
    /// `rootCertConfigMap`.
    pub root_cert_configmap: Option<String>,
    /// `proxyImage`: the sidecar image the injector puts into pods (the
    /// install's `<hub>/mesh-proxy:<tag>`).
    pub proxy_image: Option<String>,
}

impl MeshConfig {
    /// Reads `dir`; a missing directory or key is absent, not an error
    /// (the flags' values apply).
    pub fn read(dir: &Path) -> Self {
        let key = |k: &str| {
            std::fs::read_to_string(dir.join(k))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        for k in NOT_USED {
            if let Some(v) = key(k) {
                tracing::info!(key = k, value = %v, dir = %dir.display(), "mesh config key not used by meshd yet");
            }
        }
        MeshConfig {
            trust_domain: key("trustDomain"),
            root_cert_configmap: key("rootCertConfigMap"),
            proxy_image: key("proxyImage"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_configmap_keys_are_read_and_missing_ones_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trustDomain"), "example.org\n").unwrap();
        std::fs::write(dir.path().join("proxyImage"), "x/mesh-proxy:y").unwrap();
        let mc = MeshConfig::read(dir.path());
        assert_eq!(mc.trust_domain.as_deref(), Some("example.org"));
        assert_eq!(mc.proxy_image.as_deref(), Some("x/mesh-proxy:y"));
        assert_eq!(mc.root_cert_configmap, None);
        assert_eq!(
            MeshConfig::read(&dir.path().join("nope")),
            MeshConfig::default()
        );
    }
}
