//! How meshctl reaches meshd's debug endpoints: directly (`--meshd`), or
//! through the Kubernetes API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/meshd:15014/proxy/<path>`).
//!
//! [`AccessArgs::resolve`] picks one: an explicit `--meshd`/`MESHD_ADDR`
//! is used as given; an explicit `--kubeconfig`/`--context` means the API
//! server; otherwise a meshd answering on its default local address (the
//! embedded default: a user who also has a kubeconfig for some cluster
//! still reaches the mesh on this machine), else the API server when a
//! Kubernetes config is found (`KUBECONFIG`, `~/.kube/config`, or in a
//! pod), else the default local address (whose error says meshd is not
//! running).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::resources::{DEFAULT_MESHD, MeshdArgs};

/// meshd's Service name and debug port on Kubernetes (see deploy/).
const SERVICE: &str = "meshd:15014";

/// The namespace the mesh is installed into by default.
pub const DEFAULT_MESH_NAMESPACE: &str = "mesh-system";

/// A failed fetch of a meshd debug endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The API server (or its service proxy) refused or failed the request.
    #[error(
        "the Kubernetes API server could not reach service meshd in namespace {namespace} \
         ({code}: {message}); is meshd running there (kubectl -n {namespace} get pods)? \
         pass --mesh-namespace if the mesh is installed elsewhere, or --meshd ADDR"
    )]
    ApiServer {
        /// The mesh namespace that was asked.
        namespace: String,
        /// The HTTP status code the API server answered.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// meshd itself answered with an error status.
    #[error("meshd answered {code}: {message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// meshd's `error` text, or the body.
        message: String,
    },
    /// meshd's address did not answer.
    #[error(
        "cannot reach meshd at {addr} ({message}); is meshd running? start it with `meshd`, \
         or point --meshd / MESHD_ADDR at it"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The connection error.
        message: String,
    },
    /// meshd's answer was not the JSON expected.
    #[error("meshd's answer to {path} is not JSON: {source}")]
    Json {
        /// The path asked.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The Kubernetes config named by `--kubeconfig`/`--context` is unusable.
    #[error("cannot use the Kubernetes config: {0}")]
    Config(String),
    /// Any other client-side failure talking to the API server.
    #[error("request to the Kubernetes API server failed: {0}")]
    Kube(#[source] kube::Error),
    /// The request could not be built.
    #[error("invalid request path {0:?}")]
    Path(String),
}

/// How to reach meshd: the flags of every command that reads its debug
/// endpoints (`proxy-status`, `proxy-config`, `check`).
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// meshd's address, when reached directly.
    #[command(flatten)]
    pub meshd: MeshdArgs,
    /// Which Kubernetes cluster to use.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Namespace of meshd's Service when reached through the Kubernetes API
    /// server (used when --meshd/MESHD_ADDR are not given and a kubeconfig is).
    #[arg(long = "mesh-namespace", default_value = DEFAULT_MESH_NAMESPACE)]
    pub mesh_namespace: String,
}

/// Which Kubernetes cluster meshctl talks to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then
    /// the pod's service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the file's current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// The Kubernetes config these flags name. `Ok(None)` when no flag was
    /// given and no config is found anywhere; an error when a flag was
    /// given and its config is unusable.
    pub async fn config(&self) -> Result<Option<Config>, AccessError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let bad = |e: &dyn std::fmt::Display| AccessError::Config(e.to_string());
        match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| bad(&format_args!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map(Some)
                    .map_err(|e| bad(&e))
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map(Some)
                .map_err(|e| bad(&e)),
            (None, None) => Ok(Config::infer().await.ok()),
        }
    }

    /// A client for the cluster these flags name, or the inferred one; an
    /// error saying why when there is none (`install`, `uninstall`).
    pub async fn required_client(&self) -> Result<kube::Client, AccessError> {
        let config = if self.kubeconfig.is_some() || self.context.is_some() {
            self.config().await?
        } else {
            Some(
                Config::infer()
                    .await
                    .map_err(|e| AccessError::Config(e.to_string()))?,
            )
        };
        let config = config.ok_or_else(|| AccessError::Config("none found".into()))?;
        kube::Client::try_from(config).map_err(AccessError::Kube)
    }

    /// A client for the cluster these flags name (see [`KubeArgs::config`]).
    pub async fn client(&self) -> Result<Option<kube::Client>, AccessError> {
        match self.config().await? {
            Some(config) => kube::Client::try_from(config)
                .map(Some)
                .map_err(AccessError::Kube),
            None => Ok(None),
        }
    }
}

impl AccessArgs {
    /// Picks how to reach meshd (see the module doc).
    pub async fn resolve(&self) -> Result<MeshdAccess, AccessError> {
        self.resolve_with_local(DEFAULT_MESHD).await
    }

    /// [`AccessArgs::resolve`] with `local` as meshd's default local
    /// address.
    async fn resolve_with_local(&self, local: &str) -> Result<MeshdAccess, AccessError> {
        if let Some(addr) = &self.meshd.meshd {
            return Ok(MeshdAccess::Direct(addr.clone()));
        }
        let explicit_kube = self.kube.kubeconfig.is_some() || self.kube.context.is_some();
        if !explicit_kube && answers(local).await {
            return Ok(MeshdAccess::Direct(local.to_string()));
        }
        Ok(match self.kube.client().await? {
            Some(client) => MeshdAccess::ApiServer(client, self.mesh_namespace.clone()),
            None => MeshdAccess::Direct(local.to_string()),
        })
    }
}

/// How long a local meshd has to accept a connection before meshctl looks
/// for a cluster instead (loopback: a running meshd accepts at once).
const LOCAL_PROBE: std::time::Duration = std::time::Duration::from_millis(300);

/// Whether something accepts TCP connections at `addr` (a URL or
/// `host:port`) within [`LOCAL_PROBE`].
async fn answers(addr: &str) -> bool {
    let hostport = base_url(addr);
    let hostport = hostport
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    matches!(
        tokio::time::timeout(LOCAL_PROBE, tokio::net::TcpStream::connect(hostport)).await,
        Ok(Ok(_))
    )
}

/// Where meshd's debug endpoints are fetched from.
#[derive(Clone)]
pub enum MeshdAccess {
    /// meshd's debug address (`http://127.0.0.1:15014`, `host:port`).
    Direct(String),
    /// Through the API server's service proxy to Service `meshd` in this namespace.
    ApiServer(kube::Client, String),
}

impl std::fmt::Debug for MeshdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshdAccess::Direct(addr) => f.debug_tuple("Direct").field(addr).finish(),
            MeshdAccess::ApiServer(_, ns) => f.debug_tuple("ApiServer").field(ns).finish(),
        }
    }
}

impl std::fmt::Display for MeshdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshdAccess::Direct(addr) => f.write_str(&base_url(addr)),
            MeshdAccess::ApiServer(_, ns) => {
                write!(f, "service {SERVICE} in namespace {ns}, via the API server")
            }
        }
    }
}

/// `addr` with a scheme and without a trailing slash.
fn base_url(addr: &str) -> String {
    let base = addr.trim_end_matches('/');
    if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    }
}

/// The error text of a meshd error body (`{"error": "..."}`), or the body.
fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

impl MeshdAccess {
    /// The API server path that proxies `path` (e.g. `/debug/syncz`) to meshd.
    pub fn proxy_path(namespace: &str, path: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/services/{SERVICE}/proxy{path}")
    }

    /// GETs `path` (with its query) from meshd and returns the body.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, AccessError> {
        let (code, body) = match self {
            MeshdAccess::Direct(addr) => direct_get(addr, path).await?,
            MeshdAccess::ApiServer(client, ns) => {
                let uri = Self::proxy_path(ns, path);
                let req = http::Request::get(&uri)
                    .body(kube::client::Body::empty())
                    .map_err(|_| AccessError::Path(uri.clone()))?;
                let res = client.send(req).await.map_err(AccessError::Kube)?;
                let code = res.status().as_u16();
                let body = res
                    .into_body()
                    .collect()
                    .await
                    .map_err(AccessError::Kube)?
                    .to_bytes();
                if !(200..300).contains(&code) {
                    // The API server's own failures are a `Status`; meshd's
                    // answers pass through unchanged.
                    if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body)
                        && status["kind"] == "Status"
                    {
                        return Err(AccessError::ApiServer {
                            namespace: ns.clone(),
                            code,
                            message: status["message"].as_str().unwrap_or_default().to_string(),
                        });
                    }
                }
                (code, body.to_vec())
            }
        };
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err(AccessError::Status {
                code,
                message: error_text(&body),
            })
        }
    }

    /// GETs `path` from meshd and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, AccessError> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|source| AccessError::Json {
            path: path.to_string(),
            source,
        })
    }
}

/// One plain-HTTP GET to meshd's debug address: status and body.
async fn direct_get(addr: &str, path: &str) -> Result<(u16, Vec<u8>), AccessError> {
    let base = base_url(addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("{base}{path}"))
        .body(Full::new(Bytes::new()))
        .map_err(|_| AccessError::Path(format!("{base}{path}")))?;
    let unreachable = |e: &dyn std::fmt::Display| AccessError::Unreachable {
        addr: base.clone(),
        message: e.to_string(),
    };
    let resp = client.request(req).await.map_err(|e| unreachable(&e))?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    Ok((code, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;
    use kube::client::Body;

    fn args(kubeconfig: Option<PathBuf>) -> AccessArgs {
        AccessArgs {
            meshd: MeshdArgs { meshd: None },
            kube: KubeArgs {
                kubeconfig,
                context: None,
            },
            mesh_namespace: DEFAULT_MESH_NAMESPACE.into(),
        }
    }

    #[tokio::test]
    async fn a_local_meshd_that_answers_wins_over_an_inferred_kubeconfig() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = format!("http://{}", listener.local_addr().unwrap());
        let access = args(None).resolve_with_local(&local).await.unwrap();
        assert_eq!(access.to_string(), MeshdAccess::Direct(local).to_string());
    }

    #[tokio::test]
    async fn an_explicit_kubeconfig_wins_over_a_local_meshd() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters:\n- name: k\n  cluster: {server: \"http://127.0.0.1:1\"}\n\
             users:\n- name: u\n  user: {token: t}\n\
             contexts:\n- name: c\n  context: {cluster: k, user: u}\n",
        )
        .unwrap();
        let access = args(Some(path)).resolve_with_local(&local).await.unwrap();
        assert!(matches!(access, MeshdAccess::ApiServer(..)), "{access}");
    }

    #[tokio::test]
    async fn a_closed_local_port_does_not_answer() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing accepts there now.
        assert!(!answers(&addr.to_string()).await);
    }

    fn mock() -> (
        kube::Client,
        tower_test::mock::Handle<http::Request<Body>, Response<Body>>,
    ) {
        let (svc, handle) = tower_test::mock::pair::<http::Request<Body>, Response<Body>>();
        (kube::Client::new(svc, "default"), handle)
    }

    #[tokio::test]
    async fn syncz_goes_through_the_meshd_service_proxy() {
        let (client, mut handle) = mock();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            let pq = req.uri().path_and_query().map(|p| p.to_string());
            send.send_response(Response::new(Body::from(b"{\"proxies\":[]}".to_vec())));
            pq
        });
        let access = MeshdAccess::ApiServer(client, "mesh-system".into());
        let body = access
            .get("/debug/config_dump?proxyID=a.b")
            .await
            .expect("ok");
        assert_eq!(body, b"{\"proxies\":[]}");
        assert_eq!(
            server.await.expect("joined").as_deref(),
            Some(
                "/api/v1/namespaces/mesh-system/services/meshd:15014/proxy/debug/config_dump?proxyID=a.b"
            )
        );
    }

    #[tokio::test]
    async fn no_endpoints_names_service_and_namespace() {
        let (client, mut handle) = mock();
        tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("a request");
            let status = serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure",
                "message":"no endpoints available for service \"meshd\"","reason":"ServiceUnavailable","code":503});
            let mut res = Response::new(Body::from(status.to_string().into_bytes()));
            *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            send.send_response(res);
        });
        let access = MeshdAccess::ApiServer(client, "mesh-system".into());
        let err = access
            .get("/debug/syncz")
            .await
            .expect_err("503")
            .to_string();
        assert!(
            err.contains("service meshd in namespace mesh-system"),
            "{err}"
        );
        assert!(err.contains("no endpoints available"), "{err}");
    }
}
