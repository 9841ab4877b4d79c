//! The admission webhooks on Kubernetes: mesh-webhook's server on
//! `--webhook-addr` with a serving certificate from the embedded CA, and
//! (leader only) the CA's root written into the `caBundle` of the webhook
//! configurations, so the API server trusts that certificate.

use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, PostParams};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use tokio::sync::watch;

use super::KubeError;

/// The MutatingWebhookConfiguration of the chart (deploy/).
pub const MUTATING_WEBHOOK: &str = "mesh-sidecar-injector";
/// The ValidatingWebhookConfiguration of the chart (deploy/).
pub const VALIDATING_WEBHOOK: &str = "mesh-validator";
/// Lifetime of the webhook serving certificate (capped by the CA's own).
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often the leader re-checks the `caBundle`s (someone may re-apply
/// the chart, which empties them).
pub const CA_BUNDLE_RECHECK: Duration = Duration::from_secs(30);

/// DNS names the API server may use for meshd's Service.
pub fn serving_names(namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        "meshd".into(),
        format!("meshd.{namespace}"),
        format!("meshd.{namespace}.svc"),
        format!("meshd.{namespace}.svc.{cluster_domain}"),
    ]
}

/// A TLS server config for the webhooks presenting a certificate the CA
/// issues for `names`, and the task that renews it (at half its lifetime,
/// and at once when `cas` announces a new CA: see
/// [`mesh_ca::serving::spawn_renewal`]). New handshakes get the renewed
/// certificate; open connections are not disturbed.
pub fn serving_tls(
    cas: watch::Receiver<Arc<mesh_ca::CertificateAuthority>>,
    names: &[String],
) -> Result<(Arc<rustls::ServerConfig>, tokio::task::JoinHandle<()>), KubeError> {
    let spec = mesh_ca::serving::ServingSpec {
        dns_names: names.to_vec(),
        ips: Vec::new(),
        ttl: SERVING_CERT_TTL,
    };
    let ca = cas.borrow().clone();
    let cert = mesh_ca::serving::ServingCert::issue(&ca, &spec).map_err(KubeError::Serving)?;
    let config =
        mesh_webhook::tls::server_config_with_resolver(cert.clone()).map_err(KubeError::Tls)?;
    Ok((config, mesh_ca::serving::spawn_renewal(cert, spec, cas)))
}

/// The trust bundle (PEM, every root) of each CA `cas` announces, as a
/// watch, for the writers that publish it (the root ConfigMaps, the
/// webhooks' `caBundle`). The task ends when `cas`' sender is gone.
pub fn bundle_pems(
    mut cas: watch::Receiver<Arc<mesh_ca::CertificateAuthority>>,
) -> (watch::Receiver<String>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(cas.borrow_and_update().trust_bundle().pem());
    let task = tokio::spawn(async move {
        while cas.changed().await.is_ok() {
            let pem = cas.borrow_and_update().trust_bundle().pem();
            tx.send_if_modified(|current| {
                let changed = *current != pem;
                *current = pem;
                changed
            });
        }
    });
    (rx, task)
}

fn set_bundles<'a>(
    configs: impl Iterator<
        Item = &'a mut k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
    >,
    bundle: &[u8],
) -> usize {
    let mut changed = 0;
    for c in configs {
        if c.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle) {
            c.ca_bundle = Some(ByteString(bundle.to_vec()));
            changed += 1;
        }
    }
    changed
}

fn not_found(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 404)
}

/// Writes `bundle_pem` into every webhook's `clientConfig.caBundle` of the
/// two configurations (read, then replace with the read resourceVersion);
/// a configuration that does not exist (webhooks disabled) is skipped.
/// Returns how many webhooks changed.
pub async fn patch_ca_bundles(client: &Client, bundle_pem: &str) -> Result<usize, ::kube::Error> {
    let bundle = bundle_pem.as_bytes();
    let mut changed = 0;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match api.get(MUTATING_WEBHOOK).await {
        Ok(mut c) => {
            let n = set_bundles(
                c.webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.client_config),
                bundle,
            );
            if n > 0 {
                api.replace(MUTATING_WEBHOOK, &PostParams::default(), &c)
                    .await?;
            }
            changed += n;
        }
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    match api.get(VALIDATING_WEBHOOK).await {
        Ok(mut c) => {
            let n = set_bundles(
                c.webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.client_config),
                bundle,
            );
            if n > 0 {
                api.replace(VALIDATING_WEBHOOK, &PostParams::default(), &c)
                    .await?;
            }
            changed += n;
        }
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(changed)
}

/// While this replica leads, keeps the `caBundle`s equal to the current
/// value of `bundles` (every root of the CA's trust bundle: during a
/// rotation, both), rewriting them at once when it changes.
pub fn spawn_ca_bundle_patcher(
    client: Client,
    mut bundles: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut bundles_open = true;
        loop {
            if *leader.borrow_and_update() {
                let bundle_pem = bundles.borrow_and_update().clone();
                match patch_ca_bundles(&client, &bundle_pem).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(webhooks = n, "webhook caBundle updated"),
                    Err(e) => {
                        tracing::warn!(error = %e, "updating the webhooks' caBundle failed; retrying")
                    }
                }
            }
            tokio::select! {
                r = leader.changed() => if r.is_err() { return },
                r = bundles.changed(), if bundles_open => if r.is_err() { bundles_open = false },
                () = tokio::time::sleep(CA_BUNDLE_RECHECK) => {}
            }
        }
    })
}
