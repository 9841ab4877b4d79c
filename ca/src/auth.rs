//! Authenticating CA callers: a bearer credential in the `authorization`
//! metadata is either a join token ([`crate::token`]) or a Kubernetes
//! service-account token, validated with the TokenReview API. The result is
//! the caller's SPIFFE ID, which the CSR must match.
//!
//! The TokenReview authenticator needs kube and is behind the `kubernetes`
//! feature (on by default), so that the workload client, which proxies link,
//! builds without the Kubernetes client.

use std::sync::Arc;

#[cfg(feature = "kubernetes")]
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
#[cfg(feature = "kubernetes")]
use kube::api::{Api, PostParams};
use mesh_model::SpiffeId;

use crate::token::{JoinTokens, TokenError, looks_like_join_token};

/// Why a caller could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential: send `authorization: Bearer <join token or service-account token>`")]
    Missing,
    /// The credential kind is not enabled on this CA.
    #[error("{0} authentication is not enabled on this CA")]
    Disabled(&'static str),
    /// The join token was rejected.
    #[error(transparent)]
    JoinToken(#[from] TokenError),
    /// The Kubernetes token was rejected.
    #[error(transparent)]
    Kubernetes(#[from] KubeAuthError),
}

/// Why a Kubernetes service-account token was rejected.
#[derive(Debug, thiserror::Error)]
pub enum KubeAuthError {
    /// The TokenReview call failed.
    #[cfg(feature = "kubernetes")]
    #[error("TokenReview request failed: {0}")]
    Api(#[source] kube::Error),
    /// The API server says the token is not valid.
    #[error("Kubernetes rejected the service-account token: {0}")]
    NotAuthenticated(String),
    /// The token is valid but not for a service account.
    #[error("token user {0:?} is not a service account (system:serviceaccount:<ns>:<sa>)")]
    NotServiceAccount(String),
    /// The token is valid but not for one of the CA's audiences.
    #[error("token audiences {got:?} do not include any of {want:?}")]
    Audience {
        /// Audiences the API server reported.
        got: Vec<String>,
        /// Audiences the CA accepts.
        want: Vec<String>,
    },
    /// The namespace or service account is not a valid SPIFFE path segment.
    #[error("service account maps to an invalid SPIFFE ID: {0}")]
    SpiffeId(#[source] mesh_model::SpiffeIdError),
}

/// Validates projected service-account tokens with TokenReview.
#[cfg(feature = "kubernetes")]
#[derive(Clone)]
pub struct KubeAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
    trust_domain: String,
}

#[cfg(feature = "kubernetes")]
impl std::fmt::Debug for KubeAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAuthenticator")
            .field("audiences", &self.audiences)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// Maps `system:serviceaccount:<ns>:<sa>` to `spiffe://<td>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id_for_username(
    trust_domain: &str,
    username: &str,
) -> Result<SpiffeId, KubeAuthError> {
    let not_sa = || KubeAuthError::NotServiceAccount(username.to_string());
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(not_sa)?;
    let (ns, sa) = rest.split_once(':').ok_or_else(not_sa)?;
    SpiffeId::new(trust_domain, ns, sa).map_err(KubeAuthError::SpiffeId)
}

#[cfg(feature = "kubernetes")]
impl KubeAuthenticator {
    /// An authenticator using `client`; tokens must be for one of
    /// `audiences` (empty: the API server's default audience).
    pub fn new(client: kube::Client, audiences: Vec<String>, trust_domain: &str) -> Self {
        KubeAuthenticator {
            client,
            audiences,
            trust_domain: trust_domain.to_string(),
        }
    }

    /// Reviews `token` and returns the service account's SPIFFE ID.
    pub async fn authenticate(&self, token: &str) -> Result<SpiffeId, KubeAuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(KubeAuthError::Api)?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "not authenticated".to_string());
            return Err(KubeAuthError::NotAuthenticated(why));
        }
        if !self.audiences.is_empty() {
            let got = status.audiences.unwrap_or_default();
            if !got.iter().any(|a| self.audiences.contains(a)) {
                return Err(KubeAuthError::Audience {
                    got,
                    want: self.audiences.clone(),
                });
            }
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let id = spiffe_id_for_username(&self.trust_domain, &username)?;
        tracing::debug!(spiffe_id = %id, "service-account token accepted");
        Ok(id)
    }
}

/// The credential checks a CA runs, in order: a join token when the bearer
/// has a join token's shape, else a Kubernetes token.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    join_tokens: Option<Arc<JoinTokens>>,
    #[cfg(feature = "kubernetes")]
    kube: Option<KubeAuthenticator>,
}

impl Authenticator {
    /// Accepts join tokens verified with `tokens`.
    pub fn with_join_tokens(mut self, tokens: Arc<JoinTokens>) -> Self {
        self.join_tokens = Some(tokens);
        self
    }

    /// Accepts Kubernetes service-account tokens.
    #[cfg(feature = "kubernetes")]
    pub fn with_kubernetes(mut self, kube: KubeAuthenticator) -> Self {
        self.kube = Some(kube);
        self
    }

    /// Authenticates a bearer credential.
    pub async fn authenticate(&self, bearer: &str) -> Result<SpiffeId, AuthError> {
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        if looks_like_join_token(bearer) {
            let tokens = self
                .join_tokens
                .as_ref()
                .ok_or(AuthError::Disabled("join token"))?;
            return Ok(tokens.verify(bearer)?);
        }
        #[cfg(feature = "kubernetes")]
        if let Some(kube) = &self.kube {
            return Ok(kube.authenticate(bearer).await?);
        }
        Err(AuthError::Disabled("Kubernetes token"))
    }
}

#[cfg(all(test, feature = "kubernetes"))]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;

    /// A TokenReview response as the API server sends it (recorded shape).
    fn recorded_response(authenticated: bool, username: &str) -> String {
        let status = if authenticated {
            serde_json::json!({
                "authenticated": true,
                "user": {
                    "username": username,
                    "uid": "4b3c2a1e-1111-2222-3333-444455556666",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": ["reviews-v1-7d9f8c6b5-abcde"],
                        "authentication.kubernetes.io/pod-uid": ["0e9a1b2c-aaaa-bbbb-cccc-ddddeeeeffff"]
                    }
                },
                "audiences": ["mesh-ca"]
            })
        } else {
            serde_json::json!({
                "user": {},
                "error": "[invalid bearer token, service account token has expired]"
            })
        };
        serde_json::json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": { "token": "REDACTED", "audiences": ["mesh-ca"] },
            "status": status
        })
        .to_string()
    }

    async fn review(authenticated: bool, username: &str) -> Result<SpiffeId, KubeAuthError> {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let auth = KubeAuthenticator::new(client, vec!["mesh-ca".into()], "cluster.local");
        let reply = recorded_response(authenticated, username);
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["spec"]["token"], "header.payload.signature");
            assert_eq!(sent["spec"]["audiences"], serde_json::json!(["mesh-ca"]));
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(reply.into_bytes()))
                    .unwrap(),
            );
        });
        let out = auth.authenticate("header.payload.signature").await;
        server.await.unwrap();
        out
    }

    #[tokio::test]
    async fn authenticated_service_account_maps_to_its_spiffe_id() {
        let id = review(true, "system:serviceaccount:default:reviews")
            .await
            .unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
    }

    #[tokio::test]
    async fn rejected_token_reports_the_api_servers_reason() {
        let err = review(false, "").await.unwrap_err();
        assert!(err.to_string().contains("has expired"), "{err}");
    }

    #[tokio::test]
    async fn a_user_that_is_not_a_service_account_is_refused() {
        let err = review(true, "jane@example.com").await.unwrap_err();
        assert!(matches!(err, KubeAuthError::NotServiceAccount(_)), "{err}");
    }

    #[tokio::test]
    async fn authenticator_routes_join_tokens_and_refuses_disabled_kinds() {
        let tokens = Arc::new(JoinTokens::in_memory(&[1; 32]));
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let token = tokens.create(&id, std::time::Duration::from_secs(60), false);
        let auth = Authenticator::default().with_join_tokens(tokens);
        assert_eq!(auth.authenticate(&token).await.unwrap(), id);
        let err = auth.authenticate("a.b.c").await.unwrap_err();
        assert!(matches!(err, AuthError::Disabled(_)), "{err}");
        assert!(matches!(
            auth.authenticate("").await,
            Err(AuthError::Missing)
        ));
    }
}
