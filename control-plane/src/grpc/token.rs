//! `gatehouse.v1.TokenService`: `/token` (ExchangeCode, Refresh), `/revoke`
//! (Revoke) and the `/mcp` caller lookup (ResolveAccessToken); domain: `grants`.
//! The gateway's RPCs (credentials, connect links, the catalogue) are in
//! `token_gateway.rs`; the rest answer UNIMPLEMENTED until their issue lands.
//!
//! Each method converts the request, makes one domain call and converts the
//! answer; refusals carry an `ErrorReason` (see `status.rs`). Tokens leave only
//! in these answers; they are never logged.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::Caller;
use super::flow::identity_to_pb;
use super::status::refusal;
use crate::Core;
use crate::clients::PresentedClient;
use crate::config::Role;
use crate::grants::{self, CodeExchange, RefreshRequest, RevokeRequest, TokenSet};
use crate::pb::token_service_server::TokenService;
use crate::pb::{self, ErrorReason};
use crate::secret::Secret;

pub struct Token {
    pub(super) core: Arc<Core>,
}

impl Token {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// Security: the interceptor admits the data-plane and token-reader roles to this
/// service; everything but ReadUpstreamToken is for data planes only.
fn require_data_plane<T>(request: &Request<T>) -> Result<(), Status> {
    Caller::of(request)?.require(Role::DataPlane)
}

/// Client authentication as presented, and the caller's address.
fn presented_client(client: Option<pb::ClientAuthentication>) -> Result<(PresentedClient, String), Status> {
    let client = client.ok_or_else(|| {
        refusal(
            Code::Unauthenticated,
            ErrorReason::InvalidClient,
            "client authentication is required",
        )
    })?;
    Ok((
        PresentedClient {
            client_id: client.client_id,
            secret: (!client.client_secret.is_empty()).then(|| Secret::new(client.client_secret)),
            used_basic: client.used_basic,
        },
        client.remote_addr,
    ))
}

fn token_set(tokens: TokenSet) -> pb::TokenSet {
    pb::TokenSet {
        access_token: tokens.access_token.expose().to_string(),
        token_type: "Bearer".to_string(),
        expires_in: tokens.expires_in,
        refresh_token: tokens.refresh_token.map(|t| t.expose().to_string()).unwrap_or_default(),
        scope: tokens.scope,
    }
}

#[tonic::async_trait]
impl TokenService for Token {
    async fn exchange_code(&self, request: Request<pb::ExchangeCodeRequest>) -> Result<Response<pb::TokenSet>, Status> {
        require_data_plane(&request)?;
        let r = request.into_inner();
        let (client, remote_addr) = presented_client(r.client)?;
        let tokens = grants::exchange_code(
            &self.core,
            CodeExchange {
                client,
                code: Secret::new(r.code),
                code_verifier: Secret::new(r.code_verifier),
                redirect_uri: r.redirect_uri,
                resources: r.resources,
                remote_addr,
            },
        )
        .await?;
        Ok(Response::new(token_set(tokens)))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::TokenSet>, Status> {
        require_data_plane(&request)?;
        let r = request.into_inner();
        let (client, remote_addr) = presented_client(r.client)?;
        let tokens = grants::refresh(
            &self.core,
            RefreshRequest {
                client,
                refresh_token: Secret::new(r.refresh_token),
                scope: r.scope,
                resources: r.resources,
                remote_addr,
            },
        )
        .await?;
        Ok(Response::new(token_set(tokens)))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        require_data_plane(&request)?;
        let r = request.into_inner();
        let (client, remote_addr) = presented_client(r.client)?;
        grants::revoke(
            &self.core,
            RevokeRequest {
                client,
                token: Secret::new(r.token),
                token_type_hint: r.token_type_hint,
                remote_addr,
            },
        )
        .await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn resolve_access_token(
        &self,
        request: Request<pb::ResolveAccessTokenRequest>,
    ) -> Result<Response<pb::CallerInfo>, Status> {
        require_data_plane(&request)?;
        let token = Secret::new(request.into_inner().access_token);
        let caller = grants::resolve(&self.core, &token).await?;
        Ok(Response::new(pb::CallerInfo {
            grant_id: caller.grant_id,
            client_id: caller.client_id,
            identity: Some(identity_to_pb(caller.identity)),
            scopes: caller.scopes,
            resource: caller.resource,
            expires_at: caller.expires_at,
            cache_ttl_ms: caller.cache_ttl_ms,
            supports_url_elicitation: caller.supports_url_elicitation,
        }))
    }

    // The gateway's RPCs live in `token_gateway.rs`.

    async fn get_upstream_credential(
        &self,
        request: Request<pb::GetUpstreamCredentialRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        require_data_plane(&request)?;
        self.gateway_get_upstream_credential(request).await
    }

    async fn report_upstream_unauthorized(
        &self,
        request: Request<pb::ReportUpstreamUnauthorizedRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        require_data_plane(&request)?;
        self.gateway_report_upstream_unauthorized(request).await
    }

    async fn create_connect_link(
        &self,
        request: Request<pb::CreateConnectLinkRequest>,
    ) -> Result<Response<pb::ConnectLink>, Status> {
        require_data_plane(&request)?;
        self.gateway_create_connect_link(request).await
    }

    async fn record_client_capabilities(
        &self,
        request: Request<pb::RecordClientCapabilitiesRequest>,
    ) -> Result<Response<pb::RecordClientCapabilitiesResponse>, Status> {
        require_data_plane(&request)?;
        self.gateway_record_client_capabilities(request).await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        require_data_plane(&request)?;
        self.gateway_list_services(request).await
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<super::token_gateway::EventStream>, Status> {
        require_data_plane(&request)?;
        Ok(Response::new(self.gateway_watch_events(request)))
    }

    async fn read_upstream_token(
        &self,
        request: Request<pb::ReadUpstreamTokenRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        self.gateway_read_upstream_token(request).await
    }
}
