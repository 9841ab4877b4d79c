//! The CA on Kubernetes: its root and signing key live in a Secret (an
//! Istio-style `cacerts` plug-in when present, else a self-signed CA that
//! meshd creates once and keeps in the Secret `mesh-ca`), and the leader
//! publishes the root certificate into a ConfigMap in every namespace, where
//! injected proxies mount it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use ::kube::Client;
use ::kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use tokio::sync::watch;

use super::KubeError;

/// A plug-in CA (Istio's layout: `ca-cert.pem`, `ca-key.pem`,
/// `root-cert.pem`, `cert-chain.pem`), used as is when present.
pub const PLUGIN_SECRET: &str = "cacerts";
/// Where meshd keeps the CA it created itself.
pub const SELF_SIGNED_SECRET: &str = "mesh-ca";
/// Key of the root certificate in the published ConfigMap.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Field manager of meshd's server-side applies.
pub const FIELD_MANAGER: &str = "meshd";

/// The CA files kept in the `mesh-ca` Secret (the `--ca-dir` layout).
const CA_FILES: [&str; 7] = [
    mesh_ca::authority::CA_CERT,
    mesh_ca::authority::CA_KEY,
    mesh_ca::authority::ROOT_CERT,
    mesh_ca::authority::ROOT_KEY,
    mesh_ca::authority::CERT_CHAIN,
    mesh_ca::authority::TRUST_BUNDLE,
    mesh_ca::authority::TRUST_DOMAIN,
];

fn api_err(what: impl Into<String>) -> impl FnOnce(::kube::Error) -> KubeError {
    let what = what.into();
    move |source| KubeError::Api { what, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KubeError + '_ {
    move |source| KubeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// The `cacerts` plug-in Secret.
    Plugin,
    /// The `mesh-ca` Secret (created by a meshd earlier).
    Stored,
    /// Created now and saved in `mesh-ca`.
    Created,
}

/// Makes `dir` hold the cluster's CA before meshd loads it: `cacerts` if it
/// exists, else `mesh-ca`, else a new self-signed CA (created in `dir`) that
/// is saved as `mesh-ca`. Two replicas starting at once race on the create;
/// the loser takes the winner's CA.
pub async fn materialize(
    client: &Client,
    namespace: &str,
    dir: &Path,
    trust_domain: &str,
) -> Result<CaSource, KubeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(s) = api.get_opt(PLUGIN_SECRET).await.map_err(api_err(format!(
        "reading Secret {namespace}/{PLUGIN_SECRET}"
    )))? {
        write_secret(&s, dir)?;
        tracing::info!(secret = PLUGIN_SECRET, %namespace, "using the plug-in CA");
        return Ok(CaSource::Plugin);
    }
    if let Some(s) = api
        .get_opt(SELF_SIGNED_SECRET)
        .await
        .map_err(api_err(format!(
            "reading Secret {namespace}/{SELF_SIGNED_SECRET}"
        )))?
    {
        write_secret(&s, dir)?;
        tracing::info!(secret = SELF_SIGNED_SECRET, %namespace, "using the stored CA");
        return Ok(CaSource::Stored);
    }
    // A CA left in the data dir by an earlier run of this pod is kept.
    mesh_ca::CertificateAuthority::load_or_init(dir, trust_domain, mesh_ca::IssuePolicy::default())
        .map_err(KubeError::Ca)?;
    let mut data = BTreeMap::new();
    for f in CA_FILES {
        let path = dir.join(f);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            data.insert(f.to_string(), ByteString(bytes));
        }
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SELF_SIGNED_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = SELF_SIGNED_SECRET, %namespace, "created a self-signed CA and saved it");
            Ok(CaSource::Created)
        }
        Err(::kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(SELF_SIGNED_SECRET).await.map_err(api_err(format!(
                "reading Secret {namespace}/{SELF_SIGNED_SECRET}"
            )))?;
            write_secret(&s, dir)?;
            tracing::info!(
                secret = SELF_SIGNED_SECRET,
                "another replica created the CA first; using it"
            );
            Ok(CaSource::Stored)
        }
        Err(source) => Err(KubeError::Api {
            what: format!("creating Secret {namespace}/{SELF_SIGNED_SECRET}"),
            source,
        }),
    }
}

/// How often meshd re-reads the CA Secret (`cacerts`, else `mesh-ca`).
pub const SECRET_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `dir` holds exactly the CA files of `secret`.
fn holds(secret: &Secret, dir: &Path) -> bool {
    let data = secret.data.as_ref();
    CA_FILES.iter().all(|f| {
        let want = data.and_then(|d| d.get(*f)).map(|b| b.0.as_slice());
        let have = std::fs::read(dir.join(f)).ok();
        want == have.as_deref()
    })
}

/// Brings `dir` in line with the cluster's CA Secret (`cacerts` if it
/// exists, else `mesh-ca`, as [`materialize`] chose at start): when the
/// Secret's files differ from the directory's (a replaced `cacerts`, a
/// rotation written into the Secret) they are written into `dir`, where
/// meshd's CA directory watch (`mesh_ca::reload`) loads them. Returns
/// whether it wrote. With neither Secret, nothing changes.
pub async fn sync_secret(client: &Client, namespace: &str, dir: &Path) -> Result<bool, KubeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut found = None;
    for name in [PLUGIN_SECRET, SELF_SIGNED_SECRET] {
        if let Some(s) = api
            .get_opt(name)
            .await
            .map_err(api_err(format!("reading Secret {namespace}/{name}")))?
        {
            found = Some(s);
            break;
        }
    }
    let Some(secret) = found else {
        return Ok(false);
    };
    if holds(&secret, dir) {
        return Ok(false);
    }
    write_secret(&secret, dir)?;
    tracing::info!(secret = ?secret.metadata.name, %namespace, "the CA Secret changed; CA files rewritten");
    Ok(true)
}

/// Runs [`sync_secret`] every `every` (errors are logged and retried).
pub fn spawn_secret_sync(
    client: Client,
    namespace: String,
    dir: std::path::PathBuf,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = sync_secret(&client, &namespace, &dir).await {
                tracing::warn!(%error, "re-reading the CA Secret failed; retrying");
            }
        }
    })
}

/// Writes a Secret's CA files into `dir`, replacing what was there (files
/// the Secret lacks are removed, so a stale chain cannot mix in).
fn write_secret(secret: &Secret, dir: &Path) -> Result<(), KubeError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let data = secret.data.clone().unwrap_or_default();
    for f in CA_FILES {
        let path = dir.join(f);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    // ca-cert.pem last: its presence marks a complete CA directory.
    let mut names: Vec<&str> = CA_FILES
        .iter()
        .copied()
        .filter(|f| *f != mesh_ca::authority::CA_CERT)
        .collect();
    names.push(mesh_ca::authority::CA_CERT);
    for f in names {
        let Some(bytes) = data.get(f) else { continue };
        let path = dir.join(f);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(io_err(&path))?;
        file.write_all(&bytes.0).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The ConfigMap holding the root certificate, as applied.
pub fn root_cert_configmap(name: &str, namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "meshd".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_string(),
            root_pem.to_string(),
        )])),
        ..Default::default()
    }
}

/// Server-side applies the root ConfigMap into one namespace.
pub async fn publish_root(
    client: &Client,
    name: &str,
    namespace: &str,
    root_pem: &str,
) -> Result<(), ::kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut cm = serde_json::to_value(root_cert_configmap(name, namespace, root_pem))
        .map_err(::kube::Error::SerdeError)?;
    if let Some(o) = cm.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), "ConfigMap".into());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&cm)).await?;
    Ok(())
}

/// While this replica leads, keeps the root ConfigMap `name` in every
/// namespace equal to the current value of `roots` (the CA's trust bundle:
/// during a root rotation, both roots): all of them when leadership starts
/// and whenever `roots` changes, each new namespace as it appears, and any
/// copy whose data someone changed or that was deleted.
pub fn spawn_root_publisher(
    client: Client,
    name: String,
    mut roots: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns_stream = watcher::watcher(namespaces, watcher::Config::default())
            .default_backoff()
            .boxed();
        let cms: Api<ConfigMap> = Api::all(client.clone());
        let selector = format!("metadata.name={name}");
        let mut cm_stream = watcher::watcher(cms, watcher::Config::default().fields(&selector))
            .default_backoff()
            .boxed();
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut roots_open = true;
        let mut root_pem = roots.borrow_and_update().clone();
        let publish = |ns: String, pem: String| {
            let (client, name) = (client.clone(), name.clone());
            async move {
                match publish_root(&client, &name, &ns, &pem).await {
                    Ok(()) => {
                        tracing::debug!(namespace = %ns, configmap = %name, "root certificate published")
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %ns, configmap = %name, error = %e, "publishing the root certificate failed")
                    }
                }
            }
        };
        loop {
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() { return; }
                    if *leader.borrow_and_update() {
                        for ns in known.clone() { publish(ns, root_pem.clone()).await; }
                    }
                }
                changed = roots.changed(), if roots_open => {
                    if changed.is_err() { roots_open = false; continue; }
                    root_pem = roots.borrow_and_update().clone();
                    if *leader.borrow() {
                        for ns in known.clone() { publish(ns, root_pem.clone()).await; }
                    }
                }
                ev = ns_stream.next() => match ev {
                    None => return,
                    Some(Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns))) => {
                        let Some(n) = ns.metadata.name.clone() else { continue };
                        let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
                        if known.insert(n.clone()) && !terminating && *leader.borrow() {
                            publish(n, root_pem.clone()).await;
                        }
                    }
                    Some(Ok(watcher::Event::Delete(ns))) => {
                        if let Some(n) = &ns.metadata.name { known.remove(n); }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "watching namespaces failed; retrying"),
                },
                ev = cm_stream.next() => match ev {
                    None => return,
                    Some(Ok(watcher::Event::Apply(cm))) => {
                        let current = cm.data.as_ref().and_then(|d| d.get(ROOT_CERT_KEY));
                        if current != Some(&root_pem) && *leader.borrow()
                            && let Some(ns) = cm.metadata.namespace.clone() {
                            publish(ns, root_pem.clone()).await;
                        }
                    }
                    Some(Ok(watcher::Event::Delete(cm))) => {
                        if let Some(ns) = cm.metadata.namespace.clone()
                            && known.contains(&ns) && *leader.borrow() {
                            publish(ns, root_pem.clone()).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "watching root-cert ConfigMaps failed; retrying"),
                },
            }
        }
    })
}
