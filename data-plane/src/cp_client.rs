//! The data plane's only gRPC client: a channel to the control plane (balanced
//! across every configured address, failing over between them: [`failover`]) that presents the data-plane credential
//! on each call and gives each call a deadline. A failed call becomes a
//! [`CpError`] here, decoded from the status's `ErrorDetail` reason, never from
//! its message text.

mod failover;

use std::time::Duration;

use prost::Message as _;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::config::ControlPlaneClientConfig;
use crate::pb::flow_service_client::FlowServiceClient;
use crate::pb::token_service_client::TokenServiceClient;
use crate::pb::{ErrorDetail, ErrorReason};

#[derive(Debug, thiserror::Error)]
pub enum CpClientError {
    #[error("no control-plane URL configured")]
    NoUrls,
    #[error("control-plane URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no control-plane credential: set data_plane.control_plane.token_file or GATEHOUSE_DATA_PLANE__CONTROL_PLANE__TOKEN")]
    NoCredential,
    #[error("control-plane credential file {0}: {1}")]
    CredentialFile(String, std::io::Error),
    #[error("control-plane CA file {0}: {1}")]
    CaFile(String, std::io::Error),
    #[error("the upstream HTTP client cannot be built: {0}")]
    HttpClient(String),
}

/// Adds the credential and the deadline to every call (no deadline only for
/// the long-lived event stream).
#[derive(Clone)]
pub struct Authorize {
    bearer: MetadataValue<tonic::metadata::Ascii>,
    deadline: Option<Duration>,
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.bearer.clone());
        crate::layers::propagate(request.metadata_mut());
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline);
        }
        Ok(request)
    }
}

pub use failover::Failover;

type Authorized = InterceptedService<Failover, Authorize>;

/// Clients of the control plane's services. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlaneClient {
    channel: Failover,
    authorize: Authorize,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlaneClient")
    }
}

impl ControlPlaneClient {
    /// Builds the channel. Connections are made lazily, so a data plane starts
    /// while its control plane is still coming up.
    pub fn new(config: &ControlPlaneClientConfig) -> Result<Self, CpClientError> {
        if config.urls.is_empty() {
            return Err(CpClientError::NoUrls);
        }
        let credential = match (&config.token_file, config.token.is_empty()) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| CpClientError::CredentialFile(path.display().to_string(), e))?
                .trim()
                .to_string(),
            (None, false) => config.token.expose().trim().to_string(),
            (None, true) => return Err(CpClientError::NoCredential),
        };
        if credential.is_empty() {
            return Err(CpClientError::NoCredential);
        }
        let tls = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| CpClientError::CaFile(path.display().to_string(), e))?;
                Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            }
            None => None,
        };
        let mut replicas = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let bad = |reason: String| CpClientError::BadUrl {
                url: url.clone(),
                reason,
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(e.to_string()))?;
            }
            replicas.push((url.clone(), endpoint.connect_lazy()));
        }
        let channel = Failover::new(replicas);
        let bearer = format!("Bearer {credential}")
            .parse()
            .map_err(|_| CpClientError::NoCredential)?;
        Ok(Self {
            channel,
            authorize: Authorize {
                bearer,
                deadline: Some(config.deadline()),
            },
        })
    }

    /// The flow service.
    pub fn flows(&self) -> FlowServiceClient<Authorized> {
        FlowServiceClient::with_interceptor(self.channel.clone(), self.authorize.clone())
    }

    /// The token service.
    pub fn tokens(&self) -> TokenServiceClient<Authorized> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.authorize.clone())
    }

    /// The token service without a call deadline, for `WatchEvents` only: the
    /// stream lives as long as the data plane.
    pub(crate) fn event_stream(&self) -> TokenServiceClient<Authorized> {
        let authorize = Authorize {
            deadline: None,
            ..self.authorize.clone()
        };
        TokenServiceClient::with_interceptor(self.channel.clone(), authorize)
    }

    /// Whether the control plane reports itself serving (standard gRPC health).
    pub async fn is_serving(&self) -> bool {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.set_timeout(Duration::from_secs(2));
        match health.check(request).await {
            Ok(reply) => reply.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            Err(status) => {
                tracing::debug!(target: "gatehouse::cp_client", code = ?status.code(), error = %status, "control-plane health check failed");
                false
            }
        }
    }
}

/// Why a control-plane call failed, as the edges decide on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CpError {
    /// The control plane refused with a reason (`ErrorDetail` in the status).
    /// `description` is safe to show (the contract says it never holds a secret).
    #[error("refused ({reason:?}): {description}")]
    Refused { reason: ErrorReason, description: String },
    /// No control plane answered in time; retrying later may work.
    #[error("control plane unavailable")]
    Unavailable,
    /// The control plane failed without a reason (INTERNAL, UNIMPLEMENTED, a
    /// refusal of this data plane's own credential, …). Logged once, here.
    #[error("control plane failed")]
    Internal,
}

impl CpError {
    /// Decodes `status` from the call `rpc`. A status whose details hold an
    /// `ErrorDetail` is a refusal with that reason (an unknown reason from a
    /// newer control plane is kept as `Unspecified`); otherwise only the code
    /// tells unavailable from failed.
    pub(crate) fn from_status(status: &Status, rpc: &'static str) -> Self {
        if let Some(detail) = error_detail(status) {
            let reason = ErrorReason::try_from(detail.reason).unwrap_or(ErrorReason::Unspecified);
            return CpError::Refused {
                reason,
                description: detail.description,
            };
        }
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(target: "gatehouse::cp_client", rpc, code = ?status.code(), message = status.message(), "control plane unavailable");
                CpError::Unavailable
            }
            code => {
                // The control plane's messages carry no secret (only error ids), so
                // they may be logged; the person sees a bland page.
                tracing::error!(target: "gatehouse::cp_client", rpc, ?code, message = status.message(), "control-plane call failed");
                CpError::Internal
            }
        }
    }
}

/// `.cp("Rpc")` on a call's result: the message, or the decoded [`CpError`].
pub(crate) trait CpResultExt<T> {
    fn cp(self, rpc: &'static str) -> Result<T, CpError>;
}

impl<T> CpResultExt<T> for Result<tonic::Response<T>, Status> {
    fn cp(self, rpc: &'static str) -> Result<T, CpError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| CpError::from_status(&status, rpc))
    }
}

/// The `ErrorDetail` a control-plane refusal carries inside its status details
/// (a google.rpc.Status-shaped `StatusDetails`), if any.
fn error_detail(status: &Status) -> Option<ErrorDetail> {
    let details = crate::pb::StatusDetails::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/gatehouse.v1.ErrorDetail")
        .and_then(|d| ErrorDetail::decode(d.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as the control plane sends it: the ErrorDetail inside google.rpc.Status-shaped details.
    fn with_detail(code: Code, detail: ErrorDetail) -> Status {
        let details = crate::pb::StatusDetails {
            code: code as i32,
            message: "message text".into(),
            details: vec![crate::pb::AnyDetail {
                type_url: "type.googleapis.com/gatehouse.v1.ErrorDetail".into(),
                value: detail.encode_to_vec(),
            }],
        };
        Status::with_details(code, "message text", details.encode_to_vec().into())
    }

    fn refusal(code: Code, reason: ErrorReason) -> Status {
        with_detail(
            code,
            ErrorDetail {
                reason: reason as i32,
                description: "described".into(),
            },
        )
    }

    #[test]
    fn a_refusal_is_decided_by_its_reason_not_its_code() {
        let err = CpError::from_status(&refusal(Code::FailedPrecondition, ErrorReason::Expired), "Test");
        assert_eq!(
            err,
            CpError::Refused {
                reason: ErrorReason::Expired,
                description: "described".into()
            }
        );
        // Even an UNAVAILABLE code is a refusal when it names a reason.
        let err = CpError::from_status(&refusal(Code::Unavailable, ErrorReason::RateLimited), "Test");
        assert!(matches!(
            err,
            CpError::Refused {
                reason: ErrorReason::RateLimited,
                ..
            }
        ));
    }

    #[test]
    fn raw_detail_bytes_are_not_mistaken_for_a_refusal() {
        // Details that are not StatusDetails carrying an ErrorDetail decide nothing.
        let raw = ErrorDetail {
            reason: ErrorReason::Expired as i32,
            description: "x".into(),
        };
        let status = Status::with_details(Code::Unavailable, "down", raw.encode_to_vec().into());
        assert_eq!(CpError::from_status(&status, "Test"), CpError::Unavailable);
    }

    #[test]
    fn a_status_without_detail_is_unavailable_or_internal_by_code() {
        assert_eq!(
            CpError::from_status(&Status::unavailable("down"), "Test"),
            CpError::Unavailable
        );
        assert_eq!(
            CpError::from_status(&Status::deadline_exceeded("slow"), "Test"),
            CpError::Unavailable
        );
        assert_eq!(
            CpError::from_status(&Status::unimplemented("later"), "Test"),
            CpError::Internal
        );
        assert_eq!(
            CpError::from_status(&Status::unauthenticated("who"), "Test"),
            CpError::Internal
        );
    }

    #[test]
    fn an_unknown_reason_from_a_newer_control_plane_is_unspecified() {
        let status = with_detail(
            Code::InvalidArgument,
            ErrorDetail {
                reason: 9999,
                description: String::new(),
            },
        );
        let err = CpError::from_status(&status, "Test");
        assert!(matches!(
            err,
            CpError::Refused {
                reason: ErrorReason::Unspecified,
                ..
            }
        ));
    }
}
