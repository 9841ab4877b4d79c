//! How meshctl reaches meshd's debug endpoints: directly (`--meshd`), or
//! through the Kubernetes API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/meshd:15014/proxy/<path>`).

/// meshd's Service name and debug port on Kubernetes (see deploy/).
const SERVICE: &str = "meshd:15014";

/// A failed fetch of a meshd debug endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The API server (or its service proxy) refused or failed the request.
    #[error(
        "the Kubernetes API server could not reach service meshd in namespace {namespace} \
         ({code}: {message}); is meshd running there? (or pass --meshd ADDR)"
    )]
    ApiServer {
        /// The mesh namespace that was asked.
        namespace: String,
        /// The HTTP status code the API server answered.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// Any other client-side failure talking to the API server.
    #[error("request to the Kubernetes API server failed: {0}")]
    Kube(#[source] kube::Error),
    /// The request could not be built.
    #[error("invalid request path {0:?}")]
    Path(String),
}

/// Where meshd's debug endpoints are fetched from.
#[derive(Clone)]
pub enum MeshdAccess {
    /// Through the API server's service proxy to Service `meshd` in this namespace.
    ApiServer(kube::Client, String),
}

impl std::fmt::Debug for MeshdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshdAccess::ApiServer(_, ns) => f.debug_tuple("ApiServer").field(ns).finish(),
        }
    }
}

impl MeshdAccess {
    /// The API server path that proxies `path` (e.g. `/debug/syncz`) to meshd.
    pub fn proxy_path(namespace: &str, path: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/services/{SERVICE}/proxy{path}")
    }

    /// GETs `path` (with its query) from meshd and returns the body.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, AccessError> {
        match self {
            MeshdAccess::ApiServer(client, ns) => {
                let uri = Self::proxy_path(ns, path);
                let req = http::Request::get(&uri)
                    .body(Vec::new())
                    .map_err(|_| AccessError::Path(uri.clone()))?;
                match client.request_text(req).await {
                    Ok(text) => Ok(text.into_bytes()),
                    Err(kube::Error::Api(status)) => Err(AccessError::ApiServer {
                        namespace: ns.clone(),
                        code: status.code,
                        message: status.message.clone(),
                    }),
                    Err(e) => Err(AccessError::Kube(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;
    use kube::client::Body;

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
