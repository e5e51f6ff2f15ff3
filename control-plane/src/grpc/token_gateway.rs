//! The `TokenService` RPCs `/mcp` uses: the service catalogue, the caller's
//! upstream credential (refreshed once across replicas), the report of an
//! upstream 401, connect links and recorded client capabilities. Domain:
//! `credentials`, `connect_links`.

use tonic::{Code, Request, Response, Status};

use super::admin::server_to_pb;
use super::status::refusal;
use super::token::Token;
use crate::credentials::{self, Credential, CredentialError};
use crate::events::Invalidation;
use crate::mcp_servers::AuthMode;
use crate::pb::{self, ErrorReason};
use crate::store::connections::ConnectionRow;
use crate::{Core, connect_links};

impl From<CredentialError> for Status {
    fn from(err: CredentialError) -> Self {
        let description = err.to_string();
        match err {
            CredentialError::InvalidGrant => refusal(Code::Unauthenticated, ErrorReason::InvalidGrant, description),
            CredentialError::UnknownService(_) => refusal(Code::NotFound, ErrorReason::NotFound, description),
            CredentialError::NotConnected(_) => refusal(Code::FailedPrecondition, ErrorReason::NotConnected, description),
            CredentialError::NeedsReauth(_) => refusal(Code::FailedPrecondition, ErrorReason::NeedsReauth, description),
            CredentialError::StaticHeader { .. } => {
                // Names the variable or file, never its value.
                tracing::error!(target: "gatehouse::credentials", error = %description, "static upstream header unavailable");
                refusal(Code::Unavailable, ErrorReason::UpstreamUnavailable, description)
            }
            CredentialError::Unavailable { .. } => refusal(Code::Unavailable, ErrorReason::UpstreamUnavailable, description),
            CredentialError::Store(e) => e.into(),
            CredentialError::Vault(e) => e.into(),
        }
    }
}

fn credential_to_pb(credential: Credential) -> pb::UpstreamCredential {
    pb::UpstreamCredential {
        headers: credential
            .headers
            .into_iter()
            .map(|(name, value)| pb::UpstreamHeader {
                name,
                value: value.expose().to_string(),
            })
            .collect(),
        expires_at: credential.expires_at.unwrap_or(0),
        version: credential.version,
        connection_id: credential.connection_id.unwrap_or_default(),
        cache_ttl_ms: u32::try_from(credential.cache_seconds.max(0) * 1000).unwrap_or(u32::MAX),
    }
}

/// The credential of `grant_id` for `service`; `force` names a refused version.
///
/// The grant, the service and the connection come from one query (the
/// cache-off `/mcp` path asks for each call); a connection that needs no
/// refresh is opened as it stands, anything else goes through
/// `credentials::oauth_credential` (refresh under the lease).
async fn credential(core: &Core, grant_id: &str, service: &str, force: Option<&str>) -> Result<Credential, CredentialError> {
    let Some(rows) = core
        .store
        .credential_rows(grant_id, service)
        .await?
        .filter(|r| !r.owner.revoked)
    else {
        return Err(CredentialError::InvalidGrant);
    };
    let server = rows
        .server
        .ok_or_else(|| CredentialError::UnknownService(service.to_string()))?;
    match server.auth_mode {
        AuthMode::Oauth => match (&rows.connection, force) {
            (Some(row), None) if !needs_refresh(core, row) => credentials::from_connection(core, &server, row),
            _ => credentials::oauth_credential(core, &server, &rows.owner.identity_id, force).await,
        },
        AuthMode::None | AuthMode::StaticHeaders => credentials::shared(&server),
    }
}

/// Whether `oauth_credential` would refresh `row` first (it expires within
/// `REFRESH_AHEAD_SECONDS`); a row needing re-authorization is answered as it stands.
fn needs_refresh(core: &Core, row: &ConnectionRow) -> bool {
    row.status != "needs_reauth"
        && row
            .expires_at
            .is_some_and(|at| at <= core.now() + credentials::REFRESH_AHEAD_SECONDS)
}

impl Token {
    pub(super) async fn gateway_get_upstream_credential(
        &self,
        request: Request<pb::GetUpstreamCredentialRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        let r = request.into_inner();
        let credential = credential(&self.core, &r.grant_id, &r.service, None).await?;
        Ok(Response::new(credential_to_pb(credential)))
    }

    pub(super) async fn gateway_report_upstream_unauthorized(
        &self,
        request: Request<pb::ReportUpstreamUnauthorizedRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        let r = request.into_inner();
        let credential = if r.after_refresh {
            let identity_id = credentials::grant_identity(&self.core, &r.grant_id).await?;
            let server = credentials::service(&self.core, &r.service).await?;
            credentials::give_up(&self.core, &server, &identity_id, &r.version).await?
        } else {
            credential(&self.core, &r.grant_id, &r.service, Some(&r.version)).await?
        };
        Ok(Response::new(credential_to_pb(credential)))
    }

    pub(super) async fn gateway_create_connect_link(
        &self,
        request: Request<pb::CreateConnectLinkRequest>,
    ) -> Result<Response<pb::ConnectLink>, Status> {
        let r = request.into_inner();
        let identity_id = credentials::grant_identity(&self.core, &r.grant_id).await?;
        let server = credentials::service(&self.core, &r.service).await?;
        let link = connect_links::create(&self.core, &r.grant_id, &identity_id, &server.name).await?;
        Ok(Response::new(pb::ConnectLink {
            link_id: link.id.expose().to_string(),
            url: link.url,
            expires_at: link.expires_at,
            display_name: server.display_name,
        }))
    }

    pub(super) async fn gateway_record_client_capabilities(
        &self,
        request: Request<pb::RecordClientCapabilitiesRequest>,
    ) -> Result<Response<pb::RecordClientCapabilitiesResponse>, Status> {
        let r = request.into_inner();
        if !self.core.store.set_url_elicitation(&r.grant_id, r.url_elicitation).await? {
            return Err(refusal(Code::NotFound, ErrorReason::NotFound, "no such grant"));
        }
        Ok(Response::new(pb::RecordClientCapabilitiesResponse {}))
    }

    pub(super) async fn gateway_list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let servers = self.core.store.list_mcp_servers().await?;
        Ok(Response::new(pb::ListServicesResponse {
            servers: servers.into_iter().map(server_to_pb).collect(),
        }))
    }
}

// === Invalidation events ===

/// The event as data planes receive it; `None` for a resync, which ends the stream.
fn event_to_pb(event: Invalidation) -> Option<pb::Event> {
    use pb::event::Kind;
    let kind = match event {
        Invalidation::GrantRevoked(grant_id) => Kind::GrantRevoked(grant_id),
        Invalidation::IdentityRevoked(identity_id) => Kind::IdentityRevoked(identity_id),
        Invalidation::ConnectionChanged { identity_id, service } => {
            Kind::ConnectionChanged(pb::ConnectionChanged { identity_id, service })
        }
        Invalidation::ServicesChanged => Kind::ServicesChanged(true),
        Invalidation::Resync => return None,
    };
    Some(pb::Event { kind: Some(kind) })
}

impl Token {
    pub(super) fn gateway_watch_events(&self, request: Request<pb::WatchEventsRequest>) -> EventStream {
        let subscriber = request.into_inner().subscriber;
        tracing::debug!(target: "gatehouse::events", subscriber, "a data plane subscribed to invalidation events");
        let mut receiver = self.core.events.subscribe();
        let closed = self.core.events.closed();
        let (sender, stream) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            tokio::pin!(closed);
            loop {
                let item = tokio::select! {
                    // Order: the control plane stopping ends the stream, so graceful
                    // shutdown is not held open by subscribers.
                    _ = &mut closed => break,
                    received = receiver.recv() => match received {
                        // A resync (events may have been missed) ends the stream: the
                        // data plane subscribes again and drops its per-grant caches.
                        Ok(event) => event_to_pb(event).ok_or_else(|| Status::aborted("events may have been missed; subscribe again")),
                        // A subscriber that fell behind lost events it can never get
                        // back; ending its stream makes it reconnect and drop its caches.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            Err(Status::aborted(format!("the subscriber fell {missed} events behind; subscribe again")))
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(stream))
    }
}

/// The stream type of `WatchEvents`.
pub(super) type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

// === The token API for internal services ===

impl Token {
    /// `ReadUpstreamToken` (token-reader role): an identity's current upstream
    /// access token for an OAuth service, refreshed first when it is about to
    /// expire. Every read is audited.
    ///
    /// Security: only per-identity OAuth tokens are readable here; a static
    /// header is the deployment's secret, not an identity's, and is refused.
    pub(super) async fn gateway_read_upstream_token(
        &self,
        request: Request<pb::ReadUpstreamTokenRequest>,
    ) -> Result<Response<pb::UpstreamCredential>, Status> {
        let caller = super::Caller::of(&request)?;
        caller.require(crate::config::Role::TokenReader)?;
        let actor = format!("service:{}", caller.name);
        let remote_addr = super::remote_addr(&request);
        let r = request.into_inner();
        let identity = self
            .core
            .store
            .get_identity(&r.identity_id)
            .await?
            .filter(|i| i.revoked_at.is_none())
            .ok_or_else(|| refusal(Code::NotFound, ErrorReason::NotFound, "no such identity"))?;
        let server = credentials::service(&self.core, &r.service).await?;
        if server.auth_mode != AuthMode::Oauth {
            return Err(refusal(
                Code::InvalidArgument,
                ErrorReason::InvalidRequest,
                format!("{} is not a per-user OAuth service", server.name),
            ));
        }
        let result = credentials::oauth_credential(&self.core, &server, &identity.id, None).await;
        crate::audit::record(
            &self.core,
            crate::store::audit::NewAuditEvent {
                actor: &actor,
                action: "token.read",
                target: &identity.id,
                remote_addr: &remote_addr,
                detail: serde_json::json!({ "service": server.name, "purpose": r.purpose, "ok": result.is_ok() }).to_string(),
            },
        )
        .await;
        Ok(Response::new(credential_to_pb(result?)))
    }
}
