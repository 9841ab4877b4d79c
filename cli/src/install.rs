//! `meshctl install`: installs the mesh on the current Kubernetes cluster
//! (the kubeconfig's context, or in-cluster): the objects `meshctl manifest
//! generate` prints, server-side applied with field manager `meshctl`, then
//! a wait for the meshd Deployment with a progress line, then what to do
//! next. `--dry-run` prints the objects instead.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::manifest::{GenerateArgs, generate_yaml};

/// Field manager of meshctl's server-side applies.
pub const FIELD_MANAGER: &str = "meshctl";

/// Flags of `meshctl install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile, values and namespace, as for `meshctl manifest generate`.
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print the objects instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for meshd to become ready.
    #[arg(long, default_value = "300s", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Which Kubernetes cluster to install to.
    #[command(flatten)]
    pub kube: crate::access::KubeArgs,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n = s.strip_suffix('s').unwrap_or(s);
    if let Some(m) = s.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map(|m| Duration::from_secs(m * 60))
            .map_err(|e| format!("bad duration {s:?}: {e}"));
    }
    n.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("bad duration {s:?}: {e} (use e.g. 300s or 5m)"))
}

/// Errors applying or waiting.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// An object of a kind meshctl does not know how to address.
    #[error("object {index} has kind {api_version}/{kind}, which meshctl cannot apply")]
    UnknownKind {
        /// Its position in the install.
        index: usize,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// An object without `metadata.name`.
    #[error("object {0} has no metadata.name")]
    NoName(usize),
    /// The API server refused a request.
    #[error("{what}: {source}")]
    Api {
        /// What meshctl was doing.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// meshd did not become ready in time.
    #[error(
        "meshd is not ready after {0:?}; look at `kubectl -n <ns> describe deployment meshd` and `kubectl -n <ns> logs deploy/meshd`"
    )]
    Timeout(Duration),
}

/// How to address one kind of the install: its resource and whether it
/// lives in a namespace. The install's kinds are fixed, so a table is
/// enough (no discovery round trips).
pub fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (plural, namespaced) = match (api_version, kind) {
        ("v1", "Namespace") => ("namespaces", false),
        ("v1", "ServiceAccount") => ("serviceaccounts", true),
        ("v1", "ConfigMap") => ("configmaps", true),
        ("v1", "Service") => ("services", true),
        ("v1", "Secret") => ("secrets", true),
        ("apps/v1", "Deployment") => ("deployments", true),
        ("policy/v1", "PodDisruptionBudget") => ("poddisruptionbudgets", true),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => ("clusterroles", false),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => ("clusterrolebindings", false),
        ("rbac.authorization.k8s.io/v1", "Role") => ("roles", true),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ("rolebindings", true),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            ("customresourcedefinitions", false)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            ("mutatingwebhookconfigurations", false)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            ("validatingwebhookconfigurations", false)
        }
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some((
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        },
        namespaced,
    ))
}

/// One object of the install, addressed.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its resource.
    pub resource: ApiResource,
    /// Its namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The object.
    pub object: Value,
}

impl Target {
    /// `Kind ns/name` or `Kind name`.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }

    /// The dynamic API for this object.
    pub fn api(&self, client: &Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// Addresses every object (fails on the first unknown kind, before any
/// request).
pub fn targets(objects: &[Value], default_ns: &str) -> Result<Vec<Target>, InstallError> {
    objects
        .iter()
        .enumerate()
        .map(|(index, o)| {
            let api_version = o["apiVersion"].as_str().unwrap_or("");
            let kind = o["kind"].as_str().unwrap_or("");
            let (resource, namespaced) =
                resource_of(api_version, kind).ok_or_else(|| InstallError::UnknownKind {
                    index,
                    api_version: api_version.into(),
                    kind: kind.into(),
                })?;
            let name = o["metadata"]["name"]
                .as_str()
                .ok_or(InstallError::NoName(index))?
                .to_string();
            let namespace = namespaced.then(|| {
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(default_ns)
                    .to_string()
            });
            Ok(Target {
                resource,
                namespace,
                name,
                object: o.clone(),
            })
        })
        .collect()
}

/// Server-side applies every object in order (field manager `meshctl`,
/// conflicts forced: meshctl owns the install), printing one line each.
pub async fn apply_all(
    client: &Client,
    targets: &[Target],
    out: &mut impl Write,
) -> Result<(), InstallError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for t in targets {
        t.api(client)
            .patch(&t.name, &params, &Patch::Apply(&t.object))
            .await
            .map_err(|source| InstallError::Api {
                what: format!("applying {}", t.label()),
                source,
            })?;
        let _ = writeln!(out, "✔ {}", t.label());
    }
    Ok(())
}

/// Waits until the meshd Deployment has all its replicas ready (updated
/// and available), printing a progress line each time it changes.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    timeout: Duration,
    poll: Duration,
    out: &mut impl Write,
) -> Result<(), InstallError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let d = api
            .get_opt("meshd")
            .await
            .map_err(|source| InstallError::Api {
                what: format!("reading Deployment {namespace}/meshd"),
                source,
            })?;
        let want = d
            .as_ref()
            .and_then(|d| d.spec.as_ref()?.replicas)
            .unwrap_or(1);
        let status = d
            .as_ref()
            .and_then(|d| d.status.clone())
            .unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let line = format!("waiting for meshd: {ready}/{want} ready, {updated}/{want} updated");
        if line != last {
            let _ = writeln!(out, "{line}");
            last = line;
        }
        if d.is_some() && ready >= want && updated >= want {
            let _ = writeln!(out, "✔ meshd is ready");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(InstallError::Timeout(timeout));
        }
        tokio::time::sleep(poll).await;
    }
}

/// What to do after installing.
pub fn next_steps(namespace: &str) -> String {
    format!(
        "The mesh is installed in {namespace}. Next:\n\
         \x20 kubectl label namespace default mesh-injection=enabled   # inject sidecars into new pods there\n\
         \x20 kubectl rollout restart deployment -n default            # re-create existing pods with sidecars\n\
         \x20 meshctl proxy-status                                     # see the proxies meshd serves\n\
         \x20 kubectl apply -f <your VirtualService/DestinationRule YAML>\n"
    )
}

/// Runs `meshctl install`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    if args.dry_run {
        print!("{}", generate_yaml(&args.generate)?);
        return Ok(0);
    }
    let values = args.generate.values()?;
    let ns = args.generate.namespace.clone();
    let objects = crate::manifest::install::objects(&values, &ns);
    let targets = targets(&objects, &ns)?;
    let client = args.kube.required_client().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes cluster to install to (set KUBECONFIG, pass --kubeconfig, or run in a pod): {e}"
        )
    })?;
    let mut out = std::io::stdout();
    apply_all(&client, &targets, &mut out).await?;
    wait_ready(&client, &ns, args.timeout, Duration::from_secs(2), &mut out).await?;
    print!("{}", next_steps(&ns));
    Ok(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::values::{Profile, Values};
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// One request the scripted API server saw: method, path, query, body.
    pub(crate) type Seen = (Method, String, String, Value);

    /// A client over tower-test's mock, answering with `reply` and
    /// recording every request.
    pub(crate) fn mock(
        reply: impl Fn(&Method, &str, usize) -> (u16, Value) + Send + 'static,
    ) -> (Client, Arc<Mutex<Vec<Seen>>>) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let n = log.lock().unwrap().len();
                let (code, answer) = reply(&parts.method, &path, n);
                log.lock().unwrap().push((
                    parts.method,
                    path,
                    parts.uri.query().unwrap_or("").to_string(),
                    body,
                ));
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(answer.to_string().into_bytes()))
                        .unwrap(),
                );
            }
        });
        (Client::new(svc, "default"), seen)
    }

    pub(crate) fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "not found", "reason": "NotFound", "code": 404})
    }

    #[test]
    fn every_object_of_every_profile_is_addressable() {
        for p in Profile::ALL {
            let objects = crate::manifest::install::objects(&Values::for_profile(p), "mesh-system");
            let t = targets(&objects, "mesh-system").unwrap();
            assert_eq!(t.len(), objects.len());
            let deploy = t.iter().find(|t| t.resource.kind == "Deployment").unwrap();
            assert_eq!(deploy.namespace.as_deref(), Some("mesh-system"));
            let crd = t
                .iter()
                .find(|t| t.resource.kind == "CustomResourceDefinition")
                .unwrap();
            assert_eq!(crd.namespace, None);
        }
        let err = targets(
            &[json!({"apiVersion": "v9", "kind": "Gizmo", "metadata": {"name": "x"}})],
            "ns",
        )
        .unwrap_err();
        assert!(err.to_string().contains("v9/Gizmo"), "{err}");
    }

    #[tokio::test]
    async fn install_server_side_applies_every_object_in_order_as_meshctl() {
        let objects =
            crate::manifest::install::objects(&Values::for_profile(Profile::Demo), "mesh-system");
        let t = targets(&objects, "mesh-system").unwrap();
        let (client, seen) = mock(|_, _, _| {
            (
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            )
        });
        let mut out = Vec::new();
        apply_all(&client, &t, &mut out).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), objects.len());
        for ((method, _, query, body), obj) in seen.iter().zip(&objects) {
            assert_eq!(method, Method::PATCH);
            assert!(query.contains("fieldManager=meshctl"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(body, obj, "the object is sent as rendered");
        }
        let paths: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
        assert_eq!(
            paths[0], "/api/v1/namespaces/mesh-system",
            "namespace first"
        );
        assert!(paths.contains(&"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io"));
        assert!(paths.contains(&"/apis/apps/v1/namespaces/mesh-system/deployments/meshd"));
        assert!(paths.contains(&"/api/v1/namespaces/mesh-system/configmaps/mesh-config"));
        assert!(
            paths.last().unwrap().contains("webhookconfigurations"),
            "webhooks last: {paths:?}"
        );
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.contains("✔ Deployment mesh-system/meshd"),
            "{printed}"
        );
    }

    fn deployment(replicas: i32, ready: i32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "meshd", "namespace": "mesh-system", "resourceVersion": "9", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "meshd"}},
                     "template": {"metadata": {"labels": {"app": "meshd"}}, "spec": {"containers": []}}},
            "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                       "readyReplicas": ready, "availableReplicas": ready}
        })
    }

    #[tokio::test(start_paused = true)]
    async fn install_waits_for_meshd_with_a_progress_line() {
        let (client, seen) = mock(|m, p, n| {
            assert_eq!(m, Method::GET);
            assert_eq!(p, "/apis/apps/v1/namespaces/mesh-system/deployments/meshd");
            match n {
                0 => (404, not_found()),
                1 | 2 => (200, deployment(2, 0)),
                3 => (200, deployment(2, 1)),
                _ => (200, deployment(2, 2)),
            }
        });
        let mut out = Vec::new();
        wait_ready(
            &client,
            "mesh-system",
            Duration::from_secs(60),
            Duration::from_secs(2),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 5);
        let printed = String::from_utf8(out).unwrap();
        assert_eq!(
            printed,
            "waiting for meshd: 0/1 ready, 0/1 updated\n\
             waiting for meshd: 0/2 ready, 2/2 updated\n\
             waiting for meshd: 1/2 ready, 2/2 updated\n\
             waiting for meshd: 2/2 ready, 2/2 updated\n\
             ✔ meshd is ready\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn install_gives_up_after_the_timeout_saying_where_to_look() {
        let (client, _) = mock(|_, _, _| (200, deployment(1, 0)));
        let err = wait_ready(
            &client,
            "mesh-system",
            Duration::from_secs(10),
            Duration::from_secs(2),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, InstallError::Timeout(_)));
        assert!(
            err.to_string()
                .contains("kubectl -n <ns> logs deploy/meshd"),
            "{err}"
        );
    }
}
