//! The `mesh.ca.v1.CertificateService` gRPC service: authenticates the
//! caller, verifies the CSR, checks the CSR asks for the caller's own
//! identity, and signs. meshd mounts [`CaService::into_server`] on its own
//! server; `mesh-ca serve` runs it through [`crate::server`].

use std::sync::Arc;
use std::time::Duration;

use mesh_model::SpiffeId;
use mesh_proto::ca::v1::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use mesh_proto::ca::v1::{
    CreateCertificateRequest, CreateCertificateResponse, GetTrustBundleRequest,
    GetTrustBundleResponse,
};
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::authority::CertificateAuthority;
use crate::csr::verify_csr_pem;
use crate::issue::IssueError;
use crate::metrics::{CaMetrics, RejectReason};
use crate::verifier::spiffe_id_of_cert;

/// The gRPC service over a [`CertificateAuthority`].
#[derive(Debug, Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    auth: Authenticator,
    metrics: CaMetrics,
}

impl CaService {
    /// A service signing with `ca` and authenticating with `auth`.
    pub fn new(ca: Arc<CertificateAuthority>, auth: Authenticator, metrics: CaMetrics) -> Self {
        CaService { ca, auth, metrics }
    }

    /// The tonic server to add to a router.
    pub fn into_server(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
    }

    /// The caller's identity: its client certificate's SPIFFE ID when it
    /// presented one (renewal over mTLS; rustls already verified the chain
    /// against the trust bundle), else the bearer credential.
    async fn caller<T>(&self, req: &Request<T>) -> Result<SpiffeId, Status> {
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
        {
            return match spiffe_id_of_cert(leaf) {
                Some(id) if id.trust_domain() == self.ca.trust_domain() => Ok(id),
                _ => Err(Status::unauthenticated(
                    "client certificate has no SPIFFE ID of this trust domain",
                )),
            };
        }
        let bearer = match req.metadata().get("authorization") {
            None => "",
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
                v.strip_prefix("Bearer ").ok_or_else(|| {
                    Status::unauthenticated("authorization must be `Bearer <token>`")
                })?
            }
        };
        self.auth
            .authenticate(bearer.trim())
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    fn reject(&self, reason: RejectReason, status: Status) -> Status {
        self.metrics.reject(reason);
        tracing::info!(reason = ?reason, message = status.message(), "certificate request refused");
        status
    }
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let caller = self
            .caller(&request)
            .await
            .map_err(|s| self.reject(RejectReason::Unauthenticated, s))?;
        let body = request.into_inner();
        let validity = u64::try_from(body.validity_seconds).map_err(|_| {
            self.reject(
                RejectReason::InvalidRequest,
                Status::invalid_argument("validity_seconds must not be negative"),
            )
        })?;
        let csr = verify_csr_pem(&body.csr_pem).map_err(|e| {
            self.reject(
                RejectReason::InvalidRequest,
                Status::invalid_argument(e.to_string()),
            )
        })?;
        if csr.spiffe_id != caller {
            return Err(self.reject(
                RejectReason::IdentityMismatch,
                Status::permission_denied(format!(
                    "CSR asks for {} but the caller is authenticated as {caller}",
                    csr.spiffe_id
                )),
            ));
        }
        let issued = self
            .ca
            .sign_csr(&csr, Some(Duration::from_secs(validity)))
            .map_err(|e| match e {
                IssueError::TrustDomain { .. } => self.reject(
                    RejectReason::IdentityMismatch,
                    Status::permission_denied(e.to_string()),
                ),
                IssueError::SignerExpiring(_) => self.reject(
                    RejectReason::Internal,
                    Status::failed_precondition(e.to_string()),
                ),
                IssueError::Build(_) => {
                    self.reject(RejectReason::Internal, Status::internal(e.to_string()))
                }
            })?;
        self.metrics.issued.inc();
        Ok(Response::new(CreateCertificateResponse {
            cert_chain: issued.chain_pem,
        }))
    }

    async fn get_trust_bundle(
        &self,
        _request: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        // The bundle is public: no authentication, so a workload can fetch
        // it to verify the CA before sending its credential.
        let bundle = self.ca.trust_bundle();
        Ok(Response::new(GetTrustBundleResponse {
            trust_domain: bundle.trust_domain().to_string(),
            roots_pem: bundle.roots_pem(),
            spiffe_bundle_json: bundle.spiffe_json(),
        }))
    }
}
