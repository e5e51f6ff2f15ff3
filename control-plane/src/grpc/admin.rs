//! `gatehouse.v1.AdminService`: the MCP server registry, virtual keys,
//! identities, connections (list, refresh, delete) and grants (list, revoke),
//! clients, the audit log and vault keys. Every change is audited with the
//! admin caller's name.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::flow::{connection_to_pb, identity_to_pb};
use super::status::refusal;
use super::{Caller, remote_addr};
use crate::grants::{self, GrantSelector};
use crate::mcp_servers::{self, AuthMode, McpServer, StaticHeader, UpstreamOAuth};
use crate::pb::admin_service_server::AdminService;
use crate::pb::{self, ErrorReason};
use crate::store::audit::{AuditQuery, NewAuditEvent};
use crate::store::virtual_keys::VirtualKeyRow;
use crate::{Core, audit, virtual_keys};

pub struct Admin {
    core: Arc<Core>,
}

impl Admin {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn audit<T>(&self, request: &Request<T>, action: &str, target: &str, detail: String) {
        let actor = Caller::of(request).map(|c| format!("admin:{}", c.name)).unwrap_or_default();
        audit::record(
            &self.core,
            NewAuditEvent {
                actor: &actor,
                action,
                target,
                remote_addr: &remote_addr(request),
                detail,
            },
        )
        .await;
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_mcp_server(&self, request: Request<pb::CreateMcpServerRequest>) -> Result<Response<pb::McpServer>, Status> {
        let server = server_from_pb(request.get_ref().server.clone())?;
        let created = mcp_servers::create(&self.core, server).await?;
        self.audit(&request, "mcp_server.create", &created.name, String::new()).await;
        Ok(Response::new(server_to_pb(created)))
    }

    async fn list_mcp_servers(
        &self,
        _request: Request<pb::ListMcpServersRequest>,
    ) -> Result<Response<pb::ListMcpServersResponse>, Status> {
        let servers = self.core.store.list_mcp_servers().await?;
        Ok(Response::new(pb::ListMcpServersResponse {
            servers: servers.into_iter().map(server_to_pb).collect(),
        }))
    }

    async fn get_mcp_server(&self, request: Request<pb::GetMcpServerRequest>) -> Result<Response<pb::McpServer>, Status> {
        let server = mcp_servers::get(&self.core, &request.get_ref().name).await?;
        Ok(Response::new(server_to_pb(server)))
    }

    async fn update_mcp_server(&self, request: Request<pb::UpdateMcpServerRequest>) -> Result<Response<pb::McpServer>, Status> {
        let server = server_from_pb(request.get_ref().server.clone())?;
        let updated = mcp_servers::update(&self.core, server).await?;
        self.audit(&request, "mcp_server.update", &updated.name, String::new()).await;
        Ok(Response::new(server_to_pb(updated)))
    }

    async fn delete_mcp_server(
        &self,
        request: Request<pb::DeleteMcpServerRequest>,
    ) -> Result<Response<pb::DeleteMcpServerResponse>, Status> {
        let name = request.get_ref().name.clone();
        let connections_deleted = mcp_servers::delete(&self.core, &name).await?;
        self.audit(
            &request,
            "mcp_server.delete",
            &name,
            serde_json::json!({ "connections_deleted": connections_deleted }).to_string(),
        )
        .await;
        Ok(Response::new(pb::DeleteMcpServerResponse { connections_deleted }))
    }

    async fn create_virtual_key(
        &self,
        request: Request<pb::CreateVirtualKeyRequest>,
    ) -> Result<Response<pb::CreateVirtualKeyResponse>, Status> {
        let (key, secret) = virtual_keys::create(&self.core, &request.get_ref().name).await?;
        self.audit(&request, "virtual_key.create", &key.id, String::new()).await;
        Ok(Response::new(pb::CreateVirtualKeyResponse {
            key: Some(key_to_pb(key)),
            secret: secret.expose().to_string(),
        }))
    }

    async fn list_virtual_keys(
        &self,
        request: Request<pb::ListVirtualKeysRequest>,
    ) -> Result<Response<pb::ListVirtualKeysResponse>, Status> {
        let keys = self.core.store.list_virtual_keys(request.get_ref().include_revoked).await?;
        Ok(Response::new(pb::ListVirtualKeysResponse {
            keys: keys.into_iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_virtual_key(
        &self,
        request: Request<pb::RevokeVirtualKeyRequest>,
    ) -> Result<Response<pb::VirtualKey>, Status> {
        let key = virtual_keys::revoke(&self.core, &request.get_ref().id).await?;
        self.audit(&request, "virtual_key.revoke", &key.id, String::new()).await;
        Ok(Response::new(key_to_pb(key)))
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let kind = match pb::IdentityKind::try_from(request.get_ref().kind).unwrap_or(pb::IdentityKind::Unspecified) {
            pb::IdentityKind::Unspecified => None,
            pb::IdentityKind::VirtualKey => Some("virtual_key"),
            pb::IdentityKind::User => Some("user"),
            pb::IdentityKind::Anonymous => Some("anonymous"),
        };
        let identities = self.core.store.list_identities(kind).await?;
        Ok(Response::new(pb::ListIdentitiesResponse {
            identities: identities.into_iter().map(identity_to_pb).collect(),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let r = request.into_inner();
        let non_empty = |s: &str| (!s.is_empty()).then_some(s.to_owned());
        let rows = self
            .core
            .store
            .list_connections(non_empty(&r.identity_id).as_deref(), non_empty(&r.service).as_deref())
            .await?;
        let now = self.core.now();
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: rows
                .into_iter()
                // Connections still owned by a pending flow belong to nobody yet.
                .filter(|row| row.identity_id.is_some())
                .map(|row| {
                    let state = crate::flows::connection_state(&row, now);
                    connection_to_pb(row, state)
                })
                .collect(),
        }))
    }

    async fn refresh_connection(
        &self,
        request: Request<pb::RefreshConnectionRequest>,
    ) -> Result<Response<pb::Connection>, Status> {
        let id = request.get_ref().id.clone();
        let not_found = || refusal(Code::NotFound, ErrorReason::NotFound, "no such connection");
        let row = self.core.store.get_connection(&id).await?.ok_or_else(not_found)?;
        let identity_id = row.identity_id.clone().ok_or_else(not_found)?;
        let server = crate::credentials::service(&self.core, &row.service).await?;
        // Refresh now: the version in hand is reported as refused, which makes
        // the one refresh happen (under the lease) unless another just did.
        crate::credentials::oauth_credential(&self.core, &server, &identity_id, Some(&row.version.to_string())).await?;
        self.audit(&request, "connection.refresh", &id, String::new()).await;
        let row = self.core.store.get_connection(&id).await?.ok_or_else(not_found)?;
        let state = crate::flows::connection_state(&row, self.core.now());
        Ok(Response::new(connection_to_pb(row, state)))
    }

    async fn delete_connection(
        &self,
        request: Request<pb::DeleteConnectionRequest>,
    ) -> Result<Response<pb::DeleteConnectionResponse>, Status> {
        let actor = Caller::of(&request).map(|c| format!("admin:{}", c.name)).unwrap_or_default();
        let revoked = crate::connections::delete(&self.core, &request.get_ref().id, &actor, &remote_addr(&request))
            .await?
            .ok_or_else(|| refusal(Code::NotFound, ErrorReason::NotFound, "no such connection"))?;
        Ok(Response::new(pb::DeleteConnectionResponse {
            revoked_upstream: revoked,
        }))
    }

    async fn list_clients(&self, _request: Request<pb::ListClientsRequest>) -> Result<Response<pb::ListClientsResponse>, Status> {
        let clients = crate::clients::list(&self.core).await?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients.into_iter().map(super::flow::client_to_pb).collect(),
        }))
    }

    async fn list_grants(&self, request: Request<pb::ListGrantsRequest>) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let r = request.into_inner();
        let non_empty = |s: &str| (!s.is_empty()).then_some(s.to_owned());
        let grants = self
            .core
            .store
            .list_grants(
                non_empty(&r.identity_id).as_deref(),
                non_empty(&r.client_id).as_deref(),
                r.include_revoked,
            )
            .await?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: grants
                .into_iter()
                .map(|g| pb::Grant {
                    id: g.id,
                    client_id: g.client_id,
                    identity_id: g.identity_id,
                    scopes: g.scope.split_whitespace().map(String::from).collect(),
                    resource: g.resource,
                    created_at: g.created_at,
                    last_refresh_at: g.last_refresh_at.unwrap_or(0),
                    revoked_at: g.revoked_at.unwrap_or(0),
                })
                .collect(),
        }))
    }

    async fn revoke_grants(
        &self,
        request: Request<pb::RevokeGrantsRequest>,
    ) -> Result<Response<pb::RevokeGrantsResponse>, Status> {
        use pb::revoke_grants_request::Selector;
        let selector = match request.get_ref().selector.clone() {
            Some(Selector::GrantId(id)) if !id.is_empty() => GrantSelector::Grant(id),
            Some(Selector::IdentityId(id)) if !id.is_empty() => GrantSelector::Identity(id),
            Some(Selector::ClientId(id)) if !id.is_empty() => GrantSelector::Client(id),
            _ => {
                return Err(refusal(
                    Code::InvalidArgument,
                    ErrorReason::InvalidRequest,
                    "name exactly one of grant_id, identity_id or client_id",
                ));
            }
        };
        let actor = Caller::of(&request).map(|c| format!("admin:{}", c.name)).unwrap_or_default();
        let revoked = grants::revoke_selected(&self.core, &selector, &actor, &remote_addr(&request)).await?;
        Ok(Response::new(pb::RevokeGrantsResponse { revoked }))
    }

    async fn query_audit_log(
        &self,
        request: Request<pb::QueryAuditLogRequest>,
    ) -> Result<Response<pb::QueryAuditLogResponse>, Status> {
        let q = request.into_inner();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let events = self
            .core
            .store
            .query_audit(&AuditQuery {
                actor: non_empty(q.actor),
                action_prefix: non_empty(q.action_prefix),
                target: non_empty(q.target),
                since_ms: (q.since_ms > 0).then_some(q.since_ms),
                before_id: (q.before_id > 0).then_some(q.before_id),
                limit: if q.limit == 0 { 100 } else { q.limit },
            })
            .await?;
        Ok(Response::new(pb::QueryAuditLogResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    id: e.id,
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    remote_addr: e.remote_addr,
                    detail_json: e.detail,
                })
                .collect(),
        }))
    }

    async fn list_vault_keys(
        &self,
        _request: Request<pb::ListVaultKeysRequest>,
    ) -> Result<Response<pb::ListVaultKeysResponse>, Status> {
        let counts = self.core.store.count_sealed_by_key().await?;
        let active = self.core.vault.active_key_id();
        let keys = self
            .core
            .vault
            .key_ids()
            .into_iter()
            .map(|id| pb::VaultKey {
                sealed_values: counts.iter().find(|(k, _)| *k == id).map_or(0, |(_, n)| *n),
                active: id == active,
                id,
            })
            .collect();
        Ok(Response::new(pb::ListVaultKeysResponse { keys }))
    }

    async fn rotate_vault_key(
        &self,
        request: Request<pb::RotateVaultKeyRequest>,
    ) -> Result<Response<pb::RotateVaultKeyResponse>, Status> {
        let key_id = self.core.vault.add_key()?;
        let report = self.core.store.reseal_all(&self.core.vault).await?;
        self.audit(
            &request,
            "vault.rotate",
            &key_id,
            serde_json::json!({ "resealed": report.resealed, "failed": report.failed }).to_string(),
        )
        .await;
        if report.failed > 0 {
            return Err(refusal(
                Code::DataLoss,
                ErrorReason::Unspecified,
                format!(
                    "new key {key_id} is active and {} values were re-sealed, but {} stored values do not open (see the control-plane log)",
                    report.resealed, report.failed
                ),
            ));
        }
        Ok(Response::new(pb::RotateVaultKeyResponse {
            key_id,
            resealed: report.resealed,
        }))
    }
}

// === Conversions between pb and domain values ===

fn server_from_pb(server: Option<pb::McpServer>) -> Result<McpServer, Status> {
    let s = server.ok_or_else(|| refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, "server is required"))?;
    let auth_mode = match pb::UpstreamAuthMode::try_from(s.auth_mode).unwrap_or(pb::UpstreamAuthMode::Unspecified) {
        pb::UpstreamAuthMode::Unspecified | pb::UpstreamAuthMode::None => AuthMode::None,
        pb::UpstreamAuthMode::StaticHeaders => AuthMode::StaticHeaders,
        pb::UpstreamAuthMode::Oauth => AuthMode::Oauth,
    };
    let o = s.oauth.unwrap_or_default();
    Ok(McpServer {
        name: s.name,
        display_name: s.display_name,
        url: s.url,
        auth_mode,
        static_headers: s
            .static_headers
            .into_iter()
            .map(|h| StaticHeader {
                name: h.name,
                value_env: h.value_env,
                value_file: h.value_file,
            })
            .collect(),
        oauth: UpstreamOAuth {
            authorization_endpoint: o.authorization_endpoint,
            token_endpoint: o.token_endpoint,
            revocation_endpoint: o.revocation_endpoint,
            registration_endpoint: o.registration_endpoint,
            issuer: o.issuer,
            client_id: o.client_id,
            client_secret_env: o.client_secret_env,
            client_secret_file: o.client_secret_file,
            scopes: o.scopes,
            client_name: o.client_name,
            resource: o.resource,
        },
        allow_tools: s.allow_tools,
        deny_tools: s.deny_tools,
        timeout_ms: s.timeout_ms,
        ..Default::default()
    })
}

pub(crate) fn server_to_pb(s: McpServer) -> pb::McpServer {
    let o = s.oauth;
    pb::McpServer {
        name: s.name,
        display_name: s.display_name,
        url: s.url,
        auth_mode: match s.auth_mode {
            AuthMode::None => pb::UpstreamAuthMode::None,
            AuthMode::StaticHeaders => pb::UpstreamAuthMode::StaticHeaders,
            AuthMode::Oauth => pb::UpstreamAuthMode::Oauth,
        } as i32,
        static_headers: s
            .static_headers
            .into_iter()
            .map(|h| pb::StaticHeader {
                name: h.name,
                value_env: h.value_env,
                value_file: h.value_file,
            })
            .collect(),
        oauth: Some(pb::UpstreamOAuth {
            authorization_endpoint: o.authorization_endpoint,
            token_endpoint: o.token_endpoint,
            revocation_endpoint: o.revocation_endpoint,
            registration_endpoint: o.registration_endpoint,
            issuer: o.issuer,
            client_id: o.client_id,
            client_secret_env: o.client_secret_env,
            client_secret_file: o.client_secret_file,
            scopes: o.scopes,
            client_name: o.client_name,
            resource: o.resource,
        }),
        allow_tools: s.allow_tools,
        deny_tools: s.deny_tools,
        timeout_ms: s.timeout_ms,
        source: s.source,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn key_to_pb(key: VirtualKeyRow) -> pb::VirtualKey {
    pb::VirtualKey {
        id: key.id,
        name: key.name,
        prefix: key.prefix,
        identity_id: key.identity_id,
        created_at: key.created_at,
        revoked_at: key.revoked_at.unwrap_or(0),
    }
}
