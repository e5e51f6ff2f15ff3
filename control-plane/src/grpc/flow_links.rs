//! `FlowService.OpenConnectLink`: a browser opened a connect link that `/mcp`
//! handed a client (domain: `connect_links`). `grpc/flow.rs` forwards the
//! trait method here. A preview describes the link; otherwise the person's
//! proof is checked, the link spent and the upstream authorization begun
//! (for a signed-in user's link: the sign-in at the OpenID provider begun).

use tonic::{Code, Request, Response, Status};

use super::status::refusal;
use crate::connect_links::{self, LinkError, LinkView, Proof};
use crate::pb::{self, ErrorReason};
use crate::secret::Secret;

impl From<LinkError> for Status {
    fn from(err: LinkError) -> Self {
        let text = err.to_string();
        match err {
            LinkError::NotFound => refusal(Code::NotFound, ErrorReason::NotFound, text),
            LinkError::Expired => refusal(Code::FailedPrecondition, ErrorReason::Expired, text),
            LinkError::AlreadyUsed => refusal(Code::FailedPrecondition, ErrorReason::AlreadyUsed, text),
            LinkError::VirtualKeyRequired | LinkError::BrowserRequired => {
                refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, text)
            }
            LinkError::InvalidVirtualKey => refusal(Code::Unauthenticated, ErrorReason::InvalidVirtualKey, text),
            // Security: refusals name no account (neither the link's nor the one signed in).
            LinkError::WrongIdentity | LinkError::WrongAccount => refusal(Code::PermissionDenied, ErrorReason::Denied, text),
            LinkError::SignInUnavailable => refusal(Code::FailedPrecondition, ErrorReason::Denied, text),
            LinkError::Connect(e) => e.into(),
            LinkError::SignIn(e) => (*e).into(),
            LinkError::Store(e) => e.into(),
        }
    }
}

fn response(view: LinkView, authorization_url: String) -> pb::OpenConnectLinkResponse {
    pb::OpenConnectLinkResponse {
        authorization_url,
        service: view.service,
        display_name: view.display_name,
        proof: match view.proof {
            Proof::VirtualKey => pb::ConnectLinkProof::VirtualKey,
            Proof::LinkOnly => pb::ConnectLinkProof::LinkOnly,
            Proof::SignIn => pb::ConnectLinkProof::SignIn,
        } as i32,
        expires_at: view.expires_at,
        sign_in_label: view.sign_in_label,
    }
}

impl super::flow::Flow {
    pub(super) async fn open_connect_link(
        &self,
        request: Request<pb::OpenConnectLinkRequest>,
    ) -> Result<Response<pb::OpenConnectLinkResponse>, Status> {
        let request = request.into_inner();
        let link_id = Secret::new(request.link_id);
        if request.preview {
            let view = connect_links::view(&self.core, &link_id).await?;
            return Ok(Response::new(response(view, String::new())));
        }
        let virtual_key = (!request.virtual_key.trim().is_empty()).then(|| Secret::new(request.virtual_key.trim().to_owned()));
        let browser_secret = Secret::new(request.browser_secret);
        let (view, url) = connect_links::open(
            &self.core,
            &link_id,
            virtual_key.as_ref(),
            &browser_secret,
            &request.remote_addr,
        )
        .await?;
        Ok(Response::new(response(view, url)))
    }
}
