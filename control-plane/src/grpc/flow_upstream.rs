//! The upstream half of `gatehouse.v1.FlowService`: ConnectService,
//! CompleteConnect, DisconnectService (domain: `connections`) and BeginSignIn,
//! CompleteSignIn (domain: `sign_in`). `grpc/flow.rs` forwards the trait
//! methods here. Each converts the request, makes one domain call and converts
//! the answer; refusals carry an `ErrorReason`.

use tonic::{Code, Request, Response, Status};

use super::flow::open_flow;
use super::status::refusal;
use crate::connections::{self, ConnectError};
use crate::flows;
use crate::pb::{self, ErrorReason};
use crate::secret::Secret;
use crate::sign_in::{self, SignInError};
use crate::upstream::UpstreamError;

impl super::flow::Flow {
    pub(super) async fn connect_service(
        &self,
        request: Request<pb::ConnectServiceRequest>,
    ) -> Result<Response<pb::ConnectServiceResponse>, Status> {
        let request = request.into_inner();
        let (flow, remote_addr) = open_flow(&self.core, request.flow).await?;
        let authorization_url = connections::connect(&self.core, &flow, &request.service, &remote_addr).await?;
        Ok(Response::new(pb::ConnectServiceResponse { authorization_url }))
    }

    pub(super) async fn complete_connect(
        &self,
        request: Request<pb::CompleteConnectRequest>,
    ) -> Result<Response<pb::CompleteConnectResponse>, Status> {
        let request = request.into_inner();
        let state = Secret::new(request.state);
        let code = Secret::new(request.code);
        let browser_secret = Secret::new(request.browser_secret);
        let link_browser_secret = Secret::new(request.link_browser_secret);
        let completed = connections::complete(
            &self.core,
            connections::Callback {
                state: &state,
                code: &code,
                error: &request.error,
                error_description: &request.error_description,
                iss: &request.iss,
                browser_secret: &browser_secret,
                link_browser_secret: &link_browser_secret,
                remote_addr: &request.remote_addr,
            },
        )
        .await?;
        Ok(Response::new(pb::CompleteConnectResponse {
            flow_id: completed.flow_id,
            service: completed.service,
            connected: completed.connected,
            notice: completed.notice,
        }))
    }

    pub(super) async fn disconnect_service(
        &self,
        request: Request<pb::DisconnectServiceRequest>,
    ) -> Result<Response<pb::FlowView>, Status> {
        let request = request.into_inner();
        let (flow, remote_addr) = open_flow(&self.core, request.flow).await?;
        connections::disconnect(&self.core, &flow, &request.service, &remote_addr).await?;
        let view = flows::view(&self.core, &flow).await?;
        Ok(Response::new(super::flow::flow_view(view)))
    }

    pub(super) async fn begin_sign_in(
        &self,
        request: Request<pb::BeginSignInRequest>,
    ) -> Result<Response<pb::BeginSignInResponse>, Status> {
        let request = request.into_inner();
        let (flow, remote_addr) = open_flow(&self.core, request.flow).await?;
        let authorization_url = sign_in::begin(&self.core, &flow, &remote_addr).await?;
        Ok(Response::new(pb::BeginSignInResponse { authorization_url }))
    }

    pub(super) async fn complete_sign_in(
        &self,
        request: Request<pb::CompleteSignInRequest>,
    ) -> Result<Response<pb::CompleteSignInResponse>, Status> {
        let request = request.into_inner();
        let state = Secret::new(request.state);
        let code = Secret::new(request.code);
        let browser_secret = Secret::new(request.browser_secret);
        let link_browser_secret = Secret::new(request.link_browser_secret);
        let signed_in = sign_in::complete(
            &self.core,
            sign_in::Callback {
                state: &state,
                code: &code,
                error: &request.error,
                error_description: &request.error_description,
                iss: &request.iss,
                browser_secret: &browser_secret,
                link_browser_secret: &link_browser_secret,
                remote_addr: &request.remote_addr,
            },
        )
        .await?;
        Ok(Response::new(pb::CompleteSignInResponse {
            flow_id: signed_in.flow_id,
            continue_url: signed_in.continue_url,
        }))
    }
}

/// An upstream failure at a step the person can retry.
fn upstream_status(service: &str, err: UpstreamError) -> Status {
    match err {
        UpstreamError::Store(e) => e.into(),
        UpstreamError::Vault(e) => e.into(),
        UpstreamError::Transient(_) => refusal(
            Code::Unavailable,
            ErrorReason::UpstreamUnavailable,
            format!("{service} is not reachable right now; try again in a moment"),
        ),
        other => {
            // The detail (URLs, provider answers) is for the operator's log.
            tracing::warn!(target: "gatehouse::upstream", service, error = %other, "upstream step failed");
            refusal(
                Code::FailedPrecondition,
                ErrorReason::UpstreamUnavailable,
                format!("{service} cannot be used right now: {other}"),
            )
        }
    }
}

impl From<ConnectError> for Status {
    fn from(err: ConnectError) -> Self {
        let text = err.to_string();
        match err {
            ConnectError::Flow(e) => e.into(),
            ConnectError::NoIdentity => refusal(Code::FailedPrecondition, ErrorReason::OutOfOrder, text),
            ConnectError::UnknownService(_) | ConnectError::UnknownState => refusal(Code::NotFound, ErrorReason::NotFound, text),
            ConnectError::NotOAuth(_) | ConnectError::IssuerMismatch | ConnectError::MissingCode => {
                refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, text)
            }
            ConnectError::StateExpired => refusal(Code::FailedPrecondition, ErrorReason::Expired, text),
            ConnectError::StateUsed => refusal(Code::FailedPrecondition, ErrorReason::AlreadyUsed, text),
            ConnectError::WrongBrowser => refusal(Code::PermissionDenied, ErrorReason::WrongBrowser, text),
            ConnectError::IdentityChanged => refusal(Code::FailedPrecondition, ErrorReason::OutOfOrder, text),
            ConnectError::Upstream { service, source } => upstream_status(&service, source),
            ConnectError::Store(e) => e.into(),
            ConnectError::Vault(e) => e.into(),
        }
    }
}

impl From<SignInError> for Status {
    fn from(err: SignInError) -> Self {
        let text = err.to_string();
        match err {
            SignInError::Flow(e) => e.into(),
            SignInError::NotConfigured | SignInError::IssuerMismatch | SignInError::MissingCode => {
                refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, text)
            }
            SignInError::UnknownState => refusal(Code::NotFound, ErrorReason::NotFound, text),
            SignInError::StateExpired => refusal(Code::FailedPrecondition, ErrorReason::Expired, text),
            SignInError::StateUsed => refusal(Code::FailedPrecondition, ErrorReason::AlreadyUsed, text),
            SignInError::WrongBrowser => refusal(Code::PermissionDenied, ErrorReason::WrongBrowser, text),
            SignInError::IdToken(_) | SignInError::IdentityRevoked => refusal(Code::PermissionDenied, ErrorReason::Denied, text),
            SignInError::NotSignedIn(_) => refusal(Code::FailedPrecondition, ErrorReason::Denied, text),
            SignInError::Link(e) => e.into(),
            SignInError::Provider(UpstreamError::InvalidGrant) => refusal(Code::InvalidArgument, ErrorReason::InvalidGrant, text),
            SignInError::Provider(e) => upstream_status("the sign-in provider", e),
            SignInError::Store(e) => e.into(),
            SignInError::Vault(e) => e.into(),
        }
    }
}
