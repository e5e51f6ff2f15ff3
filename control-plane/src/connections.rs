//! Connections: an identity's (or a pending flow's) sealed upstream tokens for
//! one service. Connecting starts an upstream authorization, the callback
//! completes it, disconnecting removes and revokes.
//!
//! Security (SPEC-NOTES §5.2, checklist C6): the upstream `state` is created
//! only when the person clicks Connect on the consent page, which names the
//! client and its redirect host (the per-client consent), immediately before
//! the redirect; it is 256 random bits stored only hashed, single-use, at most
//! `lifetimes.upstream_state` old, and bound to the flow's browser. Upstream
//! tokens exist only sealed, bound to their row (C8). Never knows HTTP or HTML.

use serde_json::json;

use crate::flows::{self, FlowError, OpenFlow};
use crate::mcp_servers::{AuthMode, McpServer};
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::connections::{self as rows, NewConnection};
use crate::store::reseal;
use crate::store::upstream::NewAttempt;
use crate::upstream::{self, AuthorizationRequest, Pkce, UpstreamClient, UpstreamError};
use crate::vault::VaultError;
use crate::{Core, audit};

/// `upstream_attempts.kind` of a connect.
pub const KIND_CONNECT: &str = "connect";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("choose an identity before connecting services")]
    NoIdentity,
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("service {0:?} does not use per-user OAuth connections")]
    NotOAuth(String),
    #[error("unknown connection attempt")]
    UnknownState,
    #[error("this connection attempt has expired; connect again")]
    StateExpired,
    #[error("this connection attempt was already used")]
    StateUsed,
    #[error("this connection attempt belongs to another browser")]
    WrongBrowser,
    #[error("the identity changed after connecting started; connect again")]
    IdentityChanged,
    #[error("the authorization response names another issuer than the service's (RFC 9207)")]
    IssuerMismatch,
    #[error("the authorization response has no code")]
    MissingCode,
    #[error("{service} cannot be connected right now: {source}")]
    Upstream { service: String, source: UpstreamError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Who an attempt connects for. Without `link_id`: the pending flow `flow_id`
/// (its identity chosen), which owns the connection until Approve. With
/// `link_id` (a connect link opened by the same person): the identity
/// directly. Whenever `flow_id` is set, the callback must come from that flow's
/// browser; a caller passing no flow must bind the browser some other way.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub flow_id: Option<&'a str>,
    pub identity_id: Option<&'a str>,
    pub link_id: Option<&'a str>,
    /// For a connect link: the hash of the secret in the browser's connect cookie.
    pub browser_secret_hash: Option<&'a str>,
}

/// The service entry, required to use per-user OAuth.
pub async fn oauth_service(core: &Core, service: &str) -> Result<McpServer, ConnectError> {
    let server = core
        .store
        .get_mcp_server(service)
        .await?
        .ok_or_else(|| ConnectError::UnknownService(service.to_string()))?;
    if server.auth_mode != AuthMode::Oauth {
        return Err(ConnectError::NotOAuth(service.to_string()));
    }
    Ok(server)
}

/// Services page, Connect: the upstream authorization URL for `service`.
pub async fn connect(core: &Core, flow: &OpenFlow, service: &str, remote_addr: &str) -> Result<String, ConnectError> {
    // Order: the flow's browser was proved by `flows::open`; an identity must be
    // chosen (the connection will be that identity's at Approve).
    let identity_id = flow.row.identity_id.as_deref().ok_or(ConnectError::NoIdentity)?;
    let server = oauth_service(core, service).await?;
    let url = begin(
        core,
        &server,
        Origin {
            flow_id: Some(&flow.row.id),
            identity_id: Some(identity_id),
            link_id: None,
            browser_secret_hash: None,
        },
    )
    .await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: &flows::identity_actor(identity_id),
            action: "connection.begin",
            target: service,
            remote_addr,
            detail: json!({ "flow_id": flow.row.id }).to_string(),
        },
    )
    .await;
    Ok(url)
}

/// Creates the single-use state and PKCE verifier of one upstream authorization
/// and returns the URL to send the browser to. Callers have proved the person
/// (flow browser, or connect link and identity) and obtained consent.
pub async fn begin(core: &Core, server: &McpServer, origin: Origin<'_>) -> Result<String, ConnectError> {
    let upstream_err = |source| ConnectError::Upstream {
        service: server.display_name.clone(),
        source,
    };
    let client = upstream::client(core, server).await.map_err(upstream_err)?;
    // Security: SPEC-NOTES §5.2 / C6, the state is created now, after the
    // person's click on Connect, and immediately before the redirect; only its
    // hash is stored, and the PKCE verifier only sealed to this attempt's row.
    let state = secret::generate(prefix::STATE);
    let state_hash = state.hash();
    let pkce = Pkce::new();
    let verifier = core
        .vault
        .seal_secret(verifier_aad(&state_hash, &server.name), &pkce.verifier)?;
    let redirect_uri = upstream::connect_redirect_uri(core);
    let now = core.now();
    core.store
        .insert_upstream_attempt(
            &NewAttempt {
                state_hash: &state_hash,
                kind: KIND_CONNECT,
                flow_id: origin.flow_id,
                identity_id: origin.identity_id,
                link_id: origin.link_id,
                service: &server.name,
                verifier,
                nonce_hash: None,
                browser_secret_hash: origin.browser_secret_hash,
                redirect_uri: &redirect_uri,
                expires_at: now + core.config.lifetimes.upstream_state,
            },
            now,
        )
        .await?;
    let scope = server.oauth.scopes.join(" ");
    let resource = resource_of(server);
    upstream::authorization_url(
        &client.server.authorization_endpoint,
        &AuthorizationRequest {
            client_id: &client.credentials.client_id,
            redirect_uri: &redirect_uri,
            state: &state,
            code_challenge: &pkce.challenge,
            scope: &scope,
            resource: Some(resource),
            nonce: None,
        },
    )
    .map_err(upstream_err)
}

/// RFC 8707: the configured resource, else the MCP server URL (also for refreshes).
pub fn resource_of(server: &McpServer) -> &str {
    if server.oauth.resource.trim().is_empty() {
        &server.url
    } else {
        server.oauth.resource.trim()
    }
}

fn verifier_aad<'a>(state_hash: &'a str, service: &'a str) -> crate::vault::Aad<'a> {
    reseal::aad("upstream_attempts", "verifier_ct", state_hash, "", service)
}

pub use crate::upstream::Callback;

/// Where the browser goes after the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The flow to return to ("" for a connect link).
    pub flow_id: String,
    pub service: String,
    pub connected: bool,
    /// Why not, in words safe to show.
    pub notice: String,
}

/// Completes an upstream authorization: exact, unused, unexpired state from
/// the same browser; then the code exchange; then the sealed connection.
pub async fn complete(core: &Core, callback: Callback<'_>) -> Result<Completed, ConnectError> {
    let attempt = upstream::live_attempt(core, callback.state, KIND_CONNECT)
        .await
        .map_err(|refused| match refused {
            Ok(upstream::AttemptRefusal::Unknown) => ConnectError::UnknownState,
            Ok(upstream::AttemptRefusal::Used) => ConnectError::StateUsed,
            Ok(upstream::AttemptRefusal::Expired) => ConnectError::StateExpired,
            Err(err) => err.into(),
        })?;
    let state_hash = attempt.state_hash.clone();
    let now = core.now();
    // Security: SPEC-NOTES §5.2, the state is bound to the browser whose flow
    // started it; the browser is proved before the state is spent, so a state
    // replayed from elsewhere neither completes nor burns the person's attempt.
    if let Some(flow_id) = attempt.flow_id.as_deref() {
        let flow = match flows::open(core, flow_id, callback.browser_secret).await {
            Ok(flow) => flow,
            Err(FlowError::WrongBrowser) => {
                tracing::warn!(target: "gatehouse::security", reason = "upstream state presented by another browser", flow_id, service = %attempt.service, "upstream callback refused");
                return Err(ConnectError::WrongBrowser);
            }
            Err(err) => return Err(err.into()),
        };
        // Security: the connection is made for the identity shown when Connect
        // was clicked; if the person switched identity since, it is not theirs.
        if flow.row.identity_id != attempt.identity_id {
            return Err(ConnectError::IdentityChanged);
        }
    } else if attempt.link_id.is_some() {
        // Security: SPEC-NOTES §5.4 (phishing rule), a connect link's attempt is
        // bound to the browser that proved the identity on the link page; an
        // upstream URL forwarded to someone else cannot land their account on
        // the link's identity.
        let presented = callback.link_browser_secret.hash();
        let bound = attempt.browser_secret_hash.as_deref().unwrap_or_default();
        if bound.is_empty() || !crate::secret::constant_time_eq(bound.as_bytes(), presented.as_bytes()) {
            tracing::warn!(target: "gatehouse::security", reason = "connect-link state presented by another browser", service = %attempt.service, "upstream callback refused");
            return Err(ConnectError::WrongBrowser);
        }
    }
    // Invariant: one conditional update in the store consumes the state, so of two
    // concurrent callbacks exactly one goes on.
    if !core.store.consume_upstream_attempt(&state_hash, now).await? {
        return Err(ConnectError::StateUsed);
    }
    let server = core
        .store
        .get_mcp_server(&attempt.service)
        .await?
        .ok_or_else(|| ConnectError::UnknownService(attempt.service.clone()))?;
    // A connect link returns to no flow page.
    let flow_id = match attempt.link_id {
        Some(_) => String::new(),
        None => attempt.flow_id.clone().unwrap_or_default(),
    };
    let failed = |notice: String| Completed {
        flow_id: flow_id.clone(),
        service: server.name.clone(),
        connected: false,
        notice,
    };
    let client = match upstream::client(core, &server).await {
        Ok(client) => client,
        Err(err) => {
            let notice = upstream_notice(&server, &err);
            return finish_failed(core, &attempt, failed(notice), callback.remote_addr, &err.to_string()).await;
        }
    };
    // Security: RFC 9207 / RFC 9700 §4.4 (mix-up), an `iss` naming another
    // server is refused; a server that promises `iss` must send it.
    let issuer_known = !client.server.issuer.is_empty();
    let iss_wrong = !callback.iss.is_empty() && issuer_known && !upstream::same_url(callback.iss, &client.server.issuer);
    let iss_missing = callback.iss.is_empty() && client.server.authorization_response_iss_parameter_supported;
    if iss_wrong || iss_missing {
        tracing::warn!(target: "gatehouse::security", reason = "authorization response from another issuer", service = %server.name, iss = %upstream::printable(callback.iss), "upstream callback refused");
        return Err(ConnectError::IssuerMismatch);
    }
    if !callback.error.is_empty() {
        let description = upstream::printable(callback.error_description);
        let error = upstream::printable(callback.error);
        let notice = if description.is_empty() {
            format!("{} said: {error}", server.display_name)
        } else {
            format!("{} said: {error} ({description})", server.display_name)
        };
        return finish_failed(core, &attempt, failed(notice), callback.remote_addr, &error).await;
    }
    if callback.code.expose().is_empty() {
        return Err(ConnectError::MissingCode);
    }
    let verifier = core
        .vault
        .open_secret(verifier_aad(&state_hash, &server.name), &attempt.verifier_ct)?;
    let tokens = match upstream::exchange_code(
        core,
        &client.server.token_endpoint,
        &client.credentials,
        callback.code.expose(),
        &verifier,
        &attempt.redirect_uri,
        Some(resource_of(&server)),
    )
    .await
    {
        Ok(tokens) => tokens,
        Err(err) => {
            if matches!(err, UpstreamError::InvalidClient) {
                upstream::forget_client(core, &client).await.ok();
            }
            let notice = upstream_notice(&server, &err);
            return finish_failed(core, &attempt, failed(notice), callback.remote_addr, &err.to_string()).await;
        }
    };
    let account = account_of(core, &client, &tokens).await;

    // The flow owns the connection until Approve moves it to the identity; a
    // connect link's attempt connects the identity directly.
    let (identity_id, owner_flow) = match (attempt.link_id.as_deref(), attempt.flow_id.as_deref()) {
        (None, Some(flow)) => (None, Some(flow)),
        _ => (attempt.identity_id.as_deref(), None),
    };
    if identity_id.is_none() && owner_flow.is_none() {
        return Err(ConnectError::UnknownState);
    }
    let owner = rows::owner(identity_id, owner_flow);
    let id = secret::random_id("con_");
    let access = core
        .vault
        .seal_secret(rows::aad("access_ct", &id, &owner, &server.name), &tokens.access_token)?;
    let refresh = match &tokens.refresh_token {
        Some(token) => Some(
            core.vault
                .seal_secret(rows::aad("refresh_ct", &id, &owner, &server.name), token)?,
        ),
        None => None,
    };
    let scopes = tokens.scope.clone().unwrap_or_else(|| server.oauth.scopes.join(" "));
    let now = core.now();
    core.store
        .put_connection(
            &NewConnection {
                id: &id,
                identity_id,
                flow_id: owner_flow,
                service: &server.name,
                account: &account,
                scopes: &scopes,
                access,
                refresh,
                expires_at: tokens.expires_in.filter(|s| *s > 0).map(|s| now + s),
            },
            now,
        )
        .await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: &actor_of(attempt.identity_id.as_deref()),
            action: "connection.connect",
            target: &server.name,
            remote_addr: callback.remote_addr,
            detail: json!({ "flow_id": attempt.flow_id, "connection_id": id, "account": account }).to_string(),
        },
    )
    .await;
    Ok(Completed {
        flow_id,
        service: server.name.clone(),
        connected: true,
        notice: String::new(),
    })
}

/// Records a callback that ended without a connection and leaves the notice on the flow.
async fn finish_failed(
    core: &Core,
    attempt: &crate::store::upstream::AttemptRow,
    completed: Completed,
    remote_addr: &str,
    reason: &str,
) -> Result<Completed, ConnectError> {
    tracing::info!(target: "gatehouse::upstream", service = %completed.service, reason, "upstream connection not made");
    if let Some(flow_id) = attempt.flow_id.as_deref() {
        core.store.set_flow_notice(flow_id, &completed.notice).await?;
    }
    audit::record(
        core,
        NewAuditEvent {
            actor: &actor_of(attempt.identity_id.as_deref()),
            action: "connection.connect_failed",
            target: &completed.service,
            remote_addr,
            detail: json!({ "flow_id": attempt.flow_id, "reason": reason }).to_string(),
        },
    )
    .await;
    Ok(completed)
}

fn actor_of(identity_id: Option<&str>) -> String {
    identity_id.map(flows::identity_actor).unwrap_or_default()
}

/// Words for the person when the upstream failed.
fn upstream_notice(server: &McpServer, err: &UpstreamError) -> String {
    let name = &server.display_name;
    match err {
        UpstreamError::Transient(_) => format!("{name} is not reachable right now; try connecting again in a moment."),
        UpstreamError::InvalidGrant => format!("{name} did not accept the authorization; try connecting again."),
        UpstreamError::InvalidClient => format!("{name} no longer knows Gatehouse; try connecting again."),
        UpstreamError::Refused { error, .. } => format!("{name} said: {error}"),
        _ => format!("{name} could not be connected (the error is in the gateway's log)."),
    }
}

/// The upstream account: userinfo when the server has it, else what the token
/// response says, else unknown. Never fails the connection.
async fn account_of(core: &Core, client: &UpstreamClient, tokens: &upstream::TokenResponse) -> String {
    if !client.server.userinfo_endpoint.is_empty() {
        match upstream::userinfo_account(core, &client.server.userinfo_endpoint, &tokens.access_token).await {
            Ok(Some(account)) => return account,
            Ok(None) => {}
            Err(err) => {
                tracing::info!(target: "gatehouse::upstream", service = %client.service, error = %err, "userinfo failed; account taken from the token response")
            }
        }
    }
    tokens.account.clone().unwrap_or_default()
}

/// Services page, Disconnect: removes the flow's and the identity's connection
/// to `service`, revoking the tokens at the provider when it can (RFC 7009,
/// best effort: a failure is logged, the connection is gone either way).
/// Returns how many connections were removed.
pub async fn disconnect(core: &Core, flow: &OpenFlow, service: &str, remote_addr: &str) -> Result<usize, ConnectError> {
    let identity_id = flow.row.identity_id.as_deref().ok_or(ConnectError::NoIdentity)?;
    let server = core
        .store
        .get_mcp_server(service)
        .await?
        .ok_or_else(|| ConnectError::UnknownService(service.to_string()))?;
    let removed = core
        .store
        .delete_flow_and_identity_connections(&flow.row.id, Some(identity_id), service)
        .await?;
    if removed.is_empty() {
        return Ok(0);
    }
    core.events.publish(crate::events::Invalidation::ConnectionChanged {
        identity_id: identity_id.to_string(),
        service: service.to_string(),
    });
    let client = if server.auth_mode == AuthMode::Oauth {
        match upstream::client(core, &server).await {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::warn!(target: "gatehouse::upstream", service, error = %err, "cannot revoke on disconnect");
                None
            }
        }
    } else {
        None
    };
    for row in &removed {
        if let Some(client) = &client {
            revoke_row(core, client, row).await;
        }
        audit::record(
            core,
            NewAuditEvent {
                actor: &flows::identity_actor(identity_id),
                action: "connection.disconnect",
                target: service,
                remote_addr,
                detail: json!({ "flow_id": flow.row.id, "connection_id": row.id }).to_string(),
            },
        )
        .await;
    }
    Ok(removed.len())
}

/// Revokes a removed connection's tokens: the refresh token (which ends the
/// grant at most servers, RFC 7009 §2.1), then the access token.
/// Revokes a row's tokens at the provider (RFC 7009); whether every revocation was confirmed.
async fn revoke_row(core: &Core, client: &UpstreamClient, row: &rows::ConnectionRow) -> bool {
    let owner = row.owner();
    let mut tokens: Vec<(Secret, &str)> = Vec::new();
    if let Some(blob) = &row.refresh_ct {
        match core
            .vault
            .open_secret(rows::aad("refresh_ct", &row.id, &owner, &row.service), blob)
        {
            Ok(token) => tokens.push((token, "refresh_token")),
            Err(err) => {
                tracing::warn!(target: "gatehouse::upstream", connection = %row.id, error = %err, "refresh token does not open")
            }
        }
    }
    match core
        .vault
        .open_secret(rows::aad("access_ct", &row.id, &owner, &row.service), &row.access_ct)
    {
        Ok(token) => tokens.push((token, "access_token")),
        Err(err) => {
            tracing::warn!(target: "gatehouse::upstream", connection = %row.id, error = %err, "access token does not open")
        }
    }
    let mut confirmed = !tokens.is_empty();
    for (token, hint) in tokens {
        match upstream::revoke(core, client, &token, hint).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(err) => {
                tracing::warn!(target: "gatehouse::upstream", service = %row.service, connection = %row.id, hint, error = %err, "revocation at the provider failed");
                confirmed = false;
            }
        }
    }
    confirmed
}

/// Deletes one connection (administration), revoking its tokens at the
/// provider when it has a revocation endpoint. `None` when it did not exist,
/// else whether the provider confirmed the revocation.
pub async fn delete(core: &Core, id: &str, actor: &str, remote_addr: &str) -> Result<Option<bool>, ConnectError> {
    let Some(row) = core.store.get_connection(id).await? else {
        return Ok(None);
    };
    if !core.store.delete_connection(id).await? {
        return Ok(None);
    }
    if let Some(identity_id) = &row.identity_id {
        core.events.publish(crate::events::Invalidation::ConnectionChanged {
            identity_id: identity_id.clone(),
            service: row.service.clone(),
        });
    }
    let server = core.store.get_mcp_server(&row.service).await?;
    let revoked = match server {
        Some(server) if server.auth_mode == AuthMode::Oauth => match upstream::client(core, &server).await {
            Ok(client) => revoke_row(core, &client, &row).await,
            Err(err) => {
                tracing::warn!(target: "gatehouse::upstream", service = %row.service, error = %err, "cannot revoke on delete");
                false
            }
        },
        _ => false,
    };
    audit::record(
        core,
        NewAuditEvent {
            actor,
            action: "connection.delete",
            target: id,
            remote_addr,
            detail: json!({ "service": row.service, "revoked_upstream": revoked }).to_string(),
        },
    )
    .await;
    Ok(Some(revoked))
}
