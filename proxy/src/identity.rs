//! The proxy's own SVID, from the mesh's CA: the CA client library
//! (`mesh_ca::client`) generates the key in memory, sends the CSR, renews at
//! half-life with jitter and keeps the certificate through a CA outage; this
//! module forwards each certificate into the data path's SVID channel, so a
//! rotation reaches new handshakes without touching established ones.

use std::sync::Arc;

use mesh_ca::client::{CaClient, CaClientConfig, Identity, RenewPolicy, WorkloadCert};
use mesh_ca::metrics::ClientMetrics;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::tls::Svid;

fn to_svid(cert: &WorkloadCert) -> Svid {
    Svid {
        chain: cert.chain.clone(),
        key: cert.key.clone_key(),
        roots: cert.roots.roots().to_vec(),
    }
}

/// Starts keeping the workload certificate fresh and publishes each one on
/// `svid`. The CA client's metrics (`mesh_ca_client_*`, including the
/// certificate's expiry) join the proxy's Prometheus registry.
pub fn spawn(config: CaClientConfig, metrics: &Metrics, svid: watch::Sender<Option<Arc<Svid>>>) {
    let mut client_metrics = ClientMetrics::default();
    metrics.register_with(|registry| client_metrics = ClientMetrics::register(registry));
    let (mut certs, _task) = Identity::spawn(
        CaClient::new(config),
        RenewPolicy::default(),
        client_metrics,
    );
    tokio::spawn(async move {
        loop {
            let current = certs.borrow_and_update().clone();
            svid.send_replace(current.as_deref().map(|c| Arc::new(to_svid(c))));
            if certs.changed().await.is_err() {
                return;
            }
        }
    });
}
