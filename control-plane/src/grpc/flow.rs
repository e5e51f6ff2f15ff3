//! `gatehouse.v1.FlowService`: registration and lookup of clients, and the
//! consent flow from `/authorize` to approve or deny (domain: `clients`,
//! `flows`). The upstream half (sign-in, connect, disconnect) lives in
//! `flow_upstream.rs`; this file forwards those trait methods there.
//! OpenConnectLink is forwarded to `flow_links.rs`.
//!
//! Each method converts the request, makes one domain call and converts the
//! answer; refusals carry an `ErrorReason` (see `status.rs`).

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::status::refusal;
use crate::Core;
use crate::clients::{self, AuthMethod, Client, ClientKind, Registration};
use crate::flows::{self, AuthorizationRequest, ConnectionState, FlowStep, FlowView, IdentityChoice, OpenFlow, Started};
use crate::identities::IdentityKind;
use crate::pb::flow_service_server::FlowService;
use crate::pb::{self, ErrorReason};
use crate::secret::Secret;
use crate::store::identities::IdentityRow;

pub struct Flow {
    pub(super) core: Arc<Core>,
}

impl Flow {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// The flow a request names, with its browser proved; and the browser's address.
pub(super) async fn open_flow(core: &Core, flow: Option<pb::FlowRef>) -> Result<(OpenFlow, String), Status> {
    let flow = flow.ok_or_else(|| refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, "flow is required"))?;
    let open = flows::open(core, &flow.flow_id, &Secret::new(flow.browser_secret)).await?;
    Ok((open, flow.remote_addr))
}

#[tonic::async_trait]
impl FlowService for Flow {
    async fn register_client(
        &self,
        request: Request<pb::RegisterClientRequest>,
    ) -> Result<Response<pb::RegisterClientResponse>, Status> {
        let r = request.into_inner();
        let (client, secret) = clients::register(
            &self.core,
            Registration {
                redirect_uris: r.redirect_uris,
                token_endpoint_auth_method: r.token_endpoint_auth_method,
                grant_types: r.grant_types,
                response_types: r.response_types,
                client_name: r.client_name,
                client_uri: r.client_uri,
                logo_uri: r.logo_uri,
                scope: r.scope,
                application_type: r.application_type,
                software_id: r.software_id,
                software_version: r.software_version,
                contacts: r.contacts,
            },
            &r.remote_addr,
        )
        .await?;
        Ok(Response::new(pb::RegisterClientResponse {
            client: Some(client_to_pb(client)),
            client_secret: secret.map(|s| s.expose().to_string()).unwrap_or_default(),
        }))
    }

    async fn get_client(&self, request: Request<pb::GetClientRequest>) -> Result<Response<pb::Client>, Status> {
        let client = clients::get(&self.core, &request.get_ref().client_id).await?;
        Ok(Response::new(client_to_pb(client)))
    }

    async fn start_flow(&self, request: Request<pb::StartFlowRequest>) -> Result<Response<pb::StartFlowResponse>, Status> {
        let r = request.into_inner();
        let started = flows::start(
            &self.core,
            AuthorizationRequest {
                client_id: r.client_id,
                redirect_uri: r.redirect_uri,
                response_type: r.response_type,
                code_challenge: r.code_challenge,
                code_challenge_method: r.code_challenge_method,
                scope: r.scope,
                resources: r.resources,
                state: (r.has_state || !r.state.is_empty()).then_some(r.state),
                remote_addr: r.remote_addr,
            },
        )
        .await?;
        Ok(Response::new(match started {
            Started::Opened {
                flow_id,
                browser_secret,
                expires_at,
            } => pb::StartFlowResponse {
                flow_id,
                browser_secret: browser_secret.expose().to_string(),
                expires_at,
                error_redirect: String::new(),
                expires_in: self.core.config.lifetimes.flow,
            },
            Started::Refused { error_redirect } => pb::StartFlowResponse {
                error_redirect,
                ..Default::default()
            },
        }))
    }

    async fn get_flow(&self, request: Request<pb::GetFlowRequest>) -> Result<Response<pb::FlowView>, Status> {
        let (flow, _) = open_flow(&self.core, request.into_inner().flow).await?;
        let view = flows::view(&self.core, &flow).await?;
        Ok(Response::new(flow_view(view)))
    }

    async fn choose_identity(&self, request: Request<pb::ChooseIdentityRequest>) -> Result<Response<pb::FlowView>, Status> {
        use pb::choose_identity_request::Choice;
        let r = request.into_inner();
        let choice = match r.choice {
            Some(Choice::VirtualKey(key)) => IdentityChoice::VirtualKey(Secret::new(key)),
            Some(Choice::Skip(true)) => IdentityChoice::Skip,
            Some(Choice::ProxyUser(name)) => IdentityChoice::ProxyUser(name),
            Some(Choice::Skip(false)) | None => {
                return Err(refusal(
                    Code::InvalidArgument,
                    ErrorReason::InvalidRequest,
                    "choose a virtual key, skip or a proxy user",
                ));
            }
        };
        let (flow, remote_addr) = open_flow(&self.core, r.flow).await?;
        let view = flows::choose_identity(&self.core, flow, choice, &remote_addr).await?;
        Ok(Response::new(flow_view(view)))
    }

    async fn begin_sign_in(&self, request: Request<pb::BeginSignInRequest>) -> Result<Response<pb::BeginSignInResponse>, Status> {
        Flow::begin_sign_in(self, request).await
    }

    async fn complete_sign_in(
        &self,
        request: Request<pb::CompleteSignInRequest>,
    ) -> Result<Response<pb::CompleteSignInResponse>, Status> {
        Flow::complete_sign_in(self, request).await
    }

    async fn connect_service(
        &self,
        request: Request<pb::ConnectServiceRequest>,
    ) -> Result<Response<pb::ConnectServiceResponse>, Status> {
        Flow::connect_service(self, request).await
    }

    async fn complete_connect(
        &self,
        request: Request<pb::CompleteConnectRequest>,
    ) -> Result<Response<pb::CompleteConnectResponse>, Status> {
        Flow::complete_connect(self, request).await
    }

    async fn disconnect_service(&self, request: Request<pb::DisconnectServiceRequest>) -> Result<Response<pb::FlowView>, Status> {
        Flow::disconnect_service(self, request).await
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Result<Response<pb::AuthorizationRedirect>, Status> {
        let (flow, remote_addr) = open_flow(&self.core, request.into_inner().flow).await?;
        let url = flows::approve(&self.core, flow, &remote_addr).await?;
        Ok(Response::new(pb::AuthorizationRedirect { url }))
    }

    async fn deny(&self, request: Request<pb::DenyRequest>) -> Result<Response<pb::AuthorizationRedirect>, Status> {
        let (flow, remote_addr) = open_flow(&self.core, request.into_inner().flow).await?;
        let url = flows::deny(&self.core, flow, &remote_addr).await?;
        Ok(Response::new(pb::AuthorizationRedirect { url }))
    }

    async fn open_connect_link(
        &self,
        request: Request<pb::OpenConnectLinkRequest>,
    ) -> Result<Response<pb::OpenConnectLinkResponse>, Status> {
        Flow::open_connect_link(self, request).await
    }
}

// === Conversions from domain values to pb ===

pub(super) fn client_to_pb(client: Client) -> pb::Client {
    pb::Client {
        client_id: client.client_id,
        kind: match client.kind {
            ClientKind::Dynamic => pb::ClientKind::Dynamic,
            ClientKind::MetadataDocument => pb::ClientKind::MetadataDocument,
            ClientKind::Static => pb::ClientKind::Static,
        } as i32,
        client_name: client.client_name,
        redirect_uris: client.redirect_uris,
        auth_method: match client.auth_method {
            AuthMethod::None => pb::ClientAuthMethod::None,
            AuthMethod::ClientSecretPost => pb::ClientAuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretBasic => pb::ClientAuthMethod::ClientSecretBasic,
        } as i32,
        grant_types: client.grant_types,
        response_types: client.response_types,
        scope: client.scope,
        client_uri: client.client_uri,
        logo_uri: client.logo_uri,
        application_type: client.application_type,
        created_at: client.created_at,
        // Secrets Gatehouse issues do not expire (RFC 7591 §3.2.1: 0 = never).
        client_secret_expires_at: 0,
    }
}

pub(super) fn identity_to_pb(identity: IdentityRow) -> pb::Identity {
    pb::Identity {
        kind: match IdentityKind::parse(&identity.kind) {
            Some(IdentityKind::VirtualKey) => pb::IdentityKind::VirtualKey,
            Some(IdentityKind::User) => pb::IdentityKind::User,
            Some(IdentityKind::Anonymous) => pb::IdentityKind::Anonymous,
            None => pb::IdentityKind::Unspecified,
        } as i32,
        id: identity.id,
        display_name: identity.display_name,
        subject: identity.subject.unwrap_or_default(),
        created_at: identity.created_at,
    }
}

/// A connection as the contract shows it (never its tokens).
pub(super) fn connection_to_pb(row: crate::store::connections::ConnectionRow, state: ConnectionState) -> pb::Connection {
    pb::Connection {
        status: match state {
            ConnectionState::Connected => pb::ConnectionStatus::Connected,
            ConnectionState::Expiring => pb::ConnectionStatus::Expiring,
            ConnectionState::NeedsReauth => pb::ConnectionStatus::NeedsReauth,
        } as i32,
        has_refresh_token: row.refresh_ct.is_some(),
        id: row.id,
        identity_id: row.identity_id.unwrap_or_default(),
        service: row.service,
        account: row.account,
        scopes: row.scopes.split_whitespace().map(String::from).collect(),
        expires_at: row.expires_at.unwrap_or(0),
        last_refresh_at: row.last_refresh_at.unwrap_or(0),
        created_at: row.created_at,
    }
}

/// The pb view of a flow (also for `flow_upstream.rs`).
pub(super) fn flow_view(view: FlowView) -> pb::FlowView {
    let services = view
        .services
        .into_iter()
        .map(|service| {
            let connection = match service.connection {
                Some(c) => connection_to_pb(c.row, c.state),
                None => pb::Connection {
                    service: service.server.name.clone(),
                    status: pb::ConnectionStatus::NotConnected as i32,
                    ..Default::default()
                },
            };
            pb::ServiceStatus {
                service: service.server.name,
                display_name: service.server.display_name,
                needs_connection: service.needs_connection,
                connection: Some(connection),
                scopes: service.server.oauth.scopes,
            }
        })
        .collect();
    pb::FlowView {
        flow_id: view.flow.id,
        step: match view.step {
            FlowStep::ChooseIdentity => pb::FlowStep::ChooseIdentity,
            FlowStep::Services => pb::FlowStep::Services,
        } as i32,
        client: Some(client_to_pb(view.client)),
        redirect_uri: view.flow.redirect_uri,
        scopes: view.flow.scope.split_whitespace().map(String::from).collect(),
        identity: view.identity.map(identity_to_pb),
        services,
        expires_at: view.flow.expires_at,
        sign_in_available: view.sign_in_available,
        client_previously_approved: view.client_previously_approved,
        notice: view.notice.unwrap_or_default(),
    }
}
