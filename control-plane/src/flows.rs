//! Pending consent flows: opening one at `/authorize`, proving the browser at
//! every later step, the identity choice, what the pages show, and the end of a
//! flow (approve, in one transaction, or deny).
//!
//! Security: a flow is bound to the browser that opened it by a 256-bit secret
//! (the flow cookie); only its SHA-256 is stored, and every step compares the
//! hash of the presented secret in constant time. A flow is consumed exactly
//! once (approve or deny). Nothing redirects to a redirect URI before the client
//! and that URI are verified (RFC 6749 §4.1.2.1, RFC 9700 §4.11.2).
//!
//! Implements the authorization endpoint of OAuth 2.1 §4.1.1-§4.1.2 with PKCE
//! (RFC 7636, S256 only), resource indicators (RFC 8707 §2) and `iss` in every
//! authorization response (RFC 9207 §2). Knows no HTTP and no HTML.

use crate::clients::{self, Client, ClientError};
use crate::grants;
use crate::identities::{self, IdentityError, IdentityKind};
use crate::mcp_servers::{AuthMode, McpServer};
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::connections;
use crate::store::connections::ConnectionRow;
use crate::store::flows::{Approval, FlowRow, NewAuthCode, ResealedConnection};
use crate::store::identities::IdentityRow;
use crate::vault::VaultError;
use crate::{Core, audit, virtual_keys};

/// A connection whose access token expires within this many seconds, with no
/// refresh token to renew it, shows as expiring.
const EXPIRING_WITHIN_SECONDS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no such consent flow")]
    NotFound,
    /// The flow outlived `lifetimes.flow` (in seconds), named so the page can say how long a request lasts.
    #[error("this request has expired: a request must be finished within {}", lifetime_text(*.lifetime))]
    Expired { lifetime: i64 },
    #[error("this consent flow was already completed")]
    AlreadyConsumed,
    #[error("this consent flow belongs to another browser window; start again from the application")]
    WrongBrowser,
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// The client is unknown or its metadata document could not be used.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The redirect URI is not one the client registered (never redirected to).
    #[error("redirect_uri is not registered for this client")]
    InvalidRedirectUri,
    #[error("this virtual key is unknown or was revoked")]
    InvalidVirtualKey,
    /// The choice is not allowed here (for example a proxy user without `trust_proxy_user`).
    #[error("{0}")]
    Denied(&'static str),
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IdentityError> for FlowError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::InvalidProxyUser => Self::InvalidRequest("the proxy user name must be 1-256 printable characters"),
            IdentityError::Revoked => Self::Denied("this identity was revoked"),
            IdentityError::Store(e) => Self::Store(e),
        }
    }
}

impl From<virtual_keys::VirtualKeyError> for FlowError {
    fn from(err: virtual_keys::VirtualKeyError) -> Self {
        match err {
            virtual_keys::VirtualKeyError::Store(e) => Self::Store(e),
            _ => Self::InvalidVirtualKey,
        }
    }
}

/// A flow whose browser has been proved, not consumed, not expired.
#[derive(Debug, Clone)]
pub struct OpenFlow {
    pub row: FlowRow,
}

/// Loads a flow for the browser presenting `browser_secret`.
pub async fn open(core: &Core, flow_id: &str, browser_secret: &Secret) -> Result<OpenFlow, FlowError> {
    let row = core.store.get_flow(flow_id).await?.ok_or(FlowError::NotFound)?;
    // Security: the browser is proved before anything about the flow is revealed
    // (expired or consumed), so another browser learns nothing from the answer.
    if !secret::constant_time_eq(row.browser_secret_hash.as_bytes(), browser_secret.hash().as_bytes()) {
        tracing::warn!(target: "gatehouse::security", reason = "flow cookie does not match", flow_id, "consent step refused");
        return Err(FlowError::WrongBrowser);
    }
    if row.consumed_at.is_some() {
        return Err(FlowError::AlreadyConsumed);
    }
    if row.expires_at <= core.now() {
        return Err(FlowError::Expired {
            lifetime: core.config.lifetimes.flow,
        });
    }
    Ok(OpenFlow { row })
}

// === Start (/authorize) ===

/// An authorization request as the data plane parsed it.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// Empty when the client sent none.
    pub redirect_uri: String,
    pub response_type: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub scope: String,
    pub resources: Vec<String>,
    /// `None` when the client sent no state; an empty state is still echoed.
    pub state: Option<String>,
    pub remote_addr: String,
}

/// What `start` did.
#[derive(Debug)]
pub enum Started {
    /// A flow is open; the secret goes into the flow cookie and is stored only hashed.
    Opened {
        flow_id: String,
        browser_secret: Secret,
        expires_at: i64,
    },
    /// Client and redirect URI are verified, but the request is refused: send
    /// the browser to this URL (the redirect URI with error, state and iss).
    Refused { error_redirect: String },
}

/// Opens a flow for a verified authorization request.
pub async fn start(core: &Core, request: AuthorizationRequest) -> Result<Started, FlowError> {
    // Security: OAuth 2.1 §4.1.2.1 / RFC 6749 §4.1.2.1, an unknown client or an
    // unregistered redirect URI is answered with an error page (a status here),
    // never a redirect: the URI is not trusted until both are verified.
    let client = clients::get(core, &request.client_id).await?;
    // Security: RFC 9700 §4.1.3, the redirect URI matches a registered one exactly,
    // except the port of a loopback URI (RFC 8252 §7.3).
    let Some(redirect_uri) = clients::match_redirect_uri(&client, &request.redirect_uri) else {
        tracing::warn!(target: "gatehouse::security", reason = "unregistered redirect_uri", client_id = %client.client_id, "authorization request refused");
        return Err(FlowError::InvalidRedirectUri);
    };

    // By this point the client and the redirect URI are verified: every other
    // problem goes back to the client by redirect, with state and iss (RFC 9207 §2).
    let refuse = |error: &str, description: &str| {
        tracing::info!(target: "gatehouse::flows", client_id = %client.client_id, error, description, "authorization request refused by redirect");
        Ok(Started::Refused {
            error_redirect: authorization_response(
                &redirect_uri,
                &[("error", error), ("error_description", description)],
                request.state.as_deref(),
                &grants::issuer(core),
            ),
        })
    };
    if request.response_type != "code" {
        return refuse("unsupported_response_type", "response_type must be code");
    }
    // Security: RFC 6749 §4.1.2.1 unauthorized_client, a client uses only the grant it registered.
    if !client.allows_grant(clients::GRANT_AUTHORIZATION_CODE) {
        return refuse(
            "unauthorized_client",
            "the client did not register the authorization_code grant",
        );
    }
    // Security: OAuth 2.1 §4.1.1 and RFC 9700 §2.1.1, PKCE is required and only
    // S256 is accepted; an absent method would mean plain (RFC 7636 §4.3).
    if request.code_challenge_method != "S256" {
        return refuse("invalid_request", "code_challenge_method must be S256");
    }
    if !grants::is_pkce_value(&request.code_challenge) {
        return refuse(
            "invalid_request",
            "code_challenge must be 43-128 characters of [A-Za-z0-9-._~]",
        );
    }
    // Security: RFC 6749 §3.3, only scopes Gatehouse issues.
    let Some(scope) = grants::granted_scope(&request.scope) else {
        return refuse("invalid_scope", "the scopes offered are mcp and offline_access");
    };
    // Security: RFC 8707 §2, a resource must name this gateway; the code and every
    // token from it are bound to the canonical resource.
    let Some(resource) = grants::check_resources(core, &request.resources) else {
        return refuse("invalid_target", "resource must be this gateway's MCP endpoint");
    };

    let now = core.now();
    let flow_id = secret::random_id("flw_");
    let browser_secret = secret::generate(prefix::BROWSER_SECRET);
    let expires_at = now + core.config.lifetimes.flow;
    core.store
        .insert_flow(&FlowRow {
            id: flow_id.clone(),
            browser_secret_hash: browser_secret.hash(),
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            redirect_uri_sent: !request.redirect_uri.is_empty(),
            code_challenge: request.code_challenge,
            scope,
            resource,
            state: request.state,
            identity_id: None,
            notice: None,
            created_at: now,
            expires_at,
            consumed_at: None,
            outcome: None,
        })
        .await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: &format!("client:{}", client.client_id),
            action: "flow.start",
            target: &flow_id,
            remote_addr: &request.remote_addr,
            detail: serde_json::json!({ "client_id": client.client_id, "redirect_uri": redirect_uri }).to_string(),
        },
    )
    .await;
    Ok(Started::Opened {
        flow_id,
        browser_secret,
        expires_at,
    })
}

/// `redirect_uri` with `params`, `state` (when the client sent one) and `iss`
/// appended to its query (RFC 6749 §4.1.2, RFC 9207 §2).
pub fn authorization_response(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, issuer: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(params.iter().copied());
    if let Some(state) = state {
        query.append_pair("state", state);
    }
    query.append_pair("iss", issuer);
    let query = query.finish();
    let separator = match redirect_uri.find('?') {
        None => "?",
        Some(_) if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{separator}{query}")
}

// === What the pages show ===

/// Which page a flow is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStep {
    ChooseIdentity,
    Services,
}

/// The status of a connection as the services page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connected,
    /// Expires within five minutes and holds no refresh token.
    Expiring,
    /// The upstream refused its refresh token.
    NeedsReauth,
}

/// A connection on the services page: the flow's own (made in this flow, not
/// yet approved) wins over the identity's.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    pub row: ConnectionRow,
    pub state: ConnectionState,
}

/// One service on the services page.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub server: McpServer,
    /// Whether it needs a per-identity connection (auth mode OAuth).
    pub needs_connection: bool,
    pub connection: Option<ConnectionView>,
}

/// Everything the consent pages show for a flow.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub flow: FlowRow,
    pub step: FlowStep,
    pub client: Client,
    pub identity: Option<IdentityRow>,
    pub services: Vec<ServiceView>,
    pub client_previously_approved: bool,
    /// Shown once: reading the view clears it.
    pub notice: Option<String>,
    pub sign_in_available: bool,
}

/// The view of an open flow. Clears the flow's notice (it is shown once).
pub async fn view(core: &Core, flow: &OpenFlow) -> Result<FlowView, FlowError> {
    let row = &flow.row;
    let client = clients::get(core, &row.client_id).await?;
    let identity = match &row.identity_id {
        Some(id) => core.store.get_identity(id).await?,
        None => None,
    };
    let identity_id = identity.as_ref().map(|i| i.id.as_str());
    let servers = core.store.list_mcp_servers().await?;
    let connections = core.store.list_flow_connections(identity_id, &row.id).await?;
    let now = core.now();
    let services = servers
        .into_iter()
        .map(|server| {
            let flow_owned = connections
                .iter()
                .find(|c| c.service == server.name && c.identity_id.is_none());
            let identity_owned = || {
                connections
                    .iter()
                    .find(|c| c.service == server.name && c.identity_id.is_some())
            };
            let connection = flow_owned.or_else(identity_owned).map(|c| ConnectionView {
                state: connection_state(c, now),
                row: c.clone(),
            });
            ServiceView {
                needs_connection: server.auth_mode == AuthMode::Oauth,
                server,
                connection,
            }
        })
        .collect();
    let client_previously_approved = match identity_id {
        Some(id) => core.store.is_client_approved(id, &row.client_id).await?,
        None => false,
    };
    if row.notice.is_some() {
        core.store.clear_flow_notice(&row.id).await?;
    }
    Ok(FlowView {
        flow: row.clone(),
        step: if identity.is_some() {
            FlowStep::Services
        } else {
            FlowStep::ChooseIdentity
        },
        client,
        identity,
        services,
        client_previously_approved,
        notice: row.notice.clone(),
        sign_in_available: core.config.sign_in.is_some(),
    })
}

/// How a connection stands, as the pages and the admin API show it.
pub fn connection_state(connection: &ConnectionRow, now: i64) -> ConnectionState {
    if connection.status == "needs_reauth" {
        ConnectionState::NeedsReauth
    } else if connection.refresh_ct.is_none() && connection.expires_at.is_some_and(|at| at <= now + EXPIRING_WITHIN_SECONDS) {
        ConnectionState::Expiring
    } else {
        ConnectionState::Connected
    }
}

// === Identity ===

/// The identity page's choice.
#[derive(Debug, Clone)]
pub enum IdentityChoice {
    /// The virtual key the person typed.
    VirtualKey(Secret),
    /// Skip: an anonymous identity for this grant only.
    Skip,
    /// A user named by a trusted authenticating proxy.
    ProxyUser(String),
}

/// Sets the flow's identity from the person's choice and returns the new view.
/// Choosing again replaces the identity and discards the flow's connections.
pub async fn choose_identity(
    core: &Core,
    flow: OpenFlow,
    choice: IdentityChoice,
    remote_addr: &str,
) -> Result<FlowView, FlowError> {
    let identity = match choice {
        IdentityChoice::VirtualKey(presented) => {
            // Security: knowing an unrevoked virtual key is the proof; the key is
            // looked up by hash, so no comparison depends on where it differs.
            let Some(key) = virtual_keys::verify(core, &presented).await? else {
                tracing::warn!(target: "gatehouse::security", reason = "unknown or revoked virtual key", flow_id = %flow.row.id, "identity refused");
                return Err(FlowError::InvalidVirtualKey);
            };
            match core.store.get_identity(&key.identity_id).await? {
                Some(identity) if identity.revoked_at.is_none() => identity,
                _ => return Err(FlowError::InvalidVirtualKey),
            }
        }
        IdentityChoice::Skip => identities::anonymous(core).await?,
        IdentityChoice::ProxyUser(name) => {
            // Security: a user name in a header proves nothing unless a trusted
            // proxy in front of every data plane sets it; only the operator can say so.
            if !core.config.trust_proxy_user {
                tracing::warn!(target: "gatehouse::security", reason = "proxy user without trust_proxy_user", flow_id = %flow.row.id, "identity refused");
                return Err(FlowError::Denied("a proxy-asserted user is not accepted by this gateway"));
            }
            identities::proxy_user(core, &name).await?
        }
    };
    set_identity(core, &flow, &identity.id, &identity.kind, remote_addr).await?;
    let flow = reopen(core, &flow.row.id).await?;
    view(core, &flow).await
}

/// Makes `identity` the flow's identity, discarding the connections made in the
/// flow so far (they were made for the previous choice) and the previous
/// anonymous identity, if any. Also for sign-in, once the user is verified.
/// `identity_kind` is the stored kind (`virtual_key`, `user`, `anonymous`), for the audit log.
pub async fn set_identity(
    core: &Core,
    flow: &OpenFlow,
    identity_id: &str,
    identity_kind: &str,
    remote_addr: &str,
) -> Result<(), FlowError> {
    let previous_anonymous = match &flow.row.identity_id {
        Some(previous) => core
            .store
            .get_identity(previous)
            .await?
            .filter(|p| p.kind == IdentityKind::Anonymous.as_str())
            .map(|p| p.id),
        None => None,
    };
    let now = core.now();
    if !core
        .store
        .set_flow_identity(&flow.row.id, identity_id, previous_anonymous.as_deref(), now)
        .await?
    {
        return Err(closed_flow_error(core, &flow.row.id).await);
    }
    audit::record(
        core,
        NewAuditEvent {
            actor: &identity_actor(identity_id),
            action: "flow.identity",
            target: &flow.row.id,
            remote_addr,
            detail: serde_json::json!({
                "kind": identity_kind,
                "client_id": flow.row.client_id,
                "replaced": flow.row.identity_id.is_some(),
            })
            .to_string(),
        },
    )
    .await;
    Ok(())
}

/// `seconds` in words for a page: "15 minutes", "1 minute", "30 seconds".
pub fn lifetime_text(seconds: i64) -> String {
    let (n, unit) = if seconds >= 60 && seconds % 60 == 0 {
        (seconds / 60, "minute")
    } else {
        (seconds, "second")
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

/// The audit actor for an identity.
pub fn identity_actor(identity_id: &str) -> String {
    format!("identity:{identity_id}")
}

/// The flow again, after a step changed it (the browser was proved already).
async fn reopen(core: &Core, flow_id: &str) -> Result<OpenFlow, FlowError> {
    let row = core.store.get_flow(flow_id).await?.ok_or(FlowError::NotFound)?;
    if row.consumed_at.is_some() {
        return Err(FlowError::AlreadyConsumed);
    }
    if row.expires_at <= core.now() {
        return Err(FlowError::Expired {
            lifetime: core.config.lifetimes.flow,
        });
    }
    Ok(OpenFlow { row })
}

/// Why a flow that was open a moment ago refused a change.
async fn closed_flow_error(core: &Core, flow_id: &str) -> FlowError {
    match reopen(core, flow_id).await {
        Err(err) => err,
        // Still open: its identity changed under us (another tab of the same browser).
        Ok(_) => FlowError::OutOfOrder("the identity of this flow changed; review the request and approve again"),
    }
}

// === Approve and deny ===

/// Approves the flow: in one transaction consumes it, records the client as
/// approved by the identity, moves the flow's connections to the identity and
/// mints a single-use code. Returns the redirect to the client.
pub async fn approve(core: &Core, flow: OpenFlow, remote_addr: &str) -> Result<String, FlowError> {
    let row = flow.row;
    let Some(identity_id) = row.identity_id.clone() else {
        return Err(FlowError::OutOfOrder("choose an identity before approving"));
    };
    match core.store.get_identity(&identity_id).await? {
        Some(identity) if identity.revoked_at.is_none() => {}
        _ => return Err(FlowError::Denied("this identity was revoked; choose another")),
    }
    let now = core.now();
    // Security: OAuth 2.1 §4.1.2, the code is 256 random bits, stored only as its
    // hash, bound to the client, redirect URI, PKCE challenge, scope, resource and
    // identity, and short-lived.
    let code = secret::generate(prefix::CODE);
    let code_hash = code.hash();
    let new_code = NewAuthCode {
        code_hash: &code_hash,
        client_id: &row.client_id,
        identity_id: &identity_id,
        redirect_uri: &row.redirect_uri,
        redirect_uri_sent: row.redirect_uri_sent,
        code_challenge: &row.code_challenge,
        scope: &row.scope,
        resource: &row.resource,
        expires_at: now + core.config.lifetimes.code,
    };
    let approval = core
        .store
        .approve_flow(&row.id, &new_code, now, |connection| {
            reseal_for_identity(core, &row.id, &identity_id, connection)
        })
        .await?;
    let Approval::Approved { moved_services } = approval else {
        return Err(closed_flow_error(core, &row.id).await);
    };
    audit::record(
        core,
        NewAuditEvent {
            actor: &identity_actor(&identity_id),
            action: "flow.approve",
            target: &row.id,
            remote_addr,
            detail: serde_json::json!({ "client_id": row.client_id, "connections_attached": moved_services }).to_string(),
        },
    )
    .await;
    Ok(authorization_response(
        &row.redirect_uri,
        &[("code", code.expose())],
        row.state.as_deref(),
        &grants::issuer(core),
    ))
}

/// Re-binds a connection's ciphertexts from the flow to the identity: each is
/// bound to its owner by associated data, so it is opened as the flow's and
/// sealed again as the identity's (under the active key).
fn reseal_for_identity(
    core: &Core,
    flow_id: &str,
    identity_id: &str,
    connection: &ConnectionRow,
) -> Result<ResealedConnection, FlowError> {
    let old_owner = connections::owner(None, Some(flow_id));
    let new_owner = connections::owner(Some(identity_id), None);
    let move_value = |field: &'static str, blob: &[u8]| -> Result<crate::vault::Sealed, FlowError> {
        let plain = core
            .vault
            .open(connections::aad(field, &connection.id, &old_owner, &connection.service), blob)?;
        Ok(core.vault.seal(
            connections::aad(field, &connection.id, &new_owner, &connection.service),
            &plain,
        )?)
    };
    let access = move_value("access_ct", &connection.access_ct)?;
    let refresh = connection
        .refresh_ct
        .as_deref()
        .map(|blob| move_value("refresh_ct", blob))
        .transpose()?;
    Ok(ResealedConnection {
        access_ct: access.blob,
        refresh_ct: refresh.map(|r| r.blob),
        key_id: access.key_id,
    })
}

/// Denies the flow: consumes it and returns the access_denied redirect.
pub async fn deny(core: &Core, flow: OpenFlow, remote_addr: &str) -> Result<String, FlowError> {
    let row = flow.row;
    if !core.store.deny_flow(&row.id, core.now()).await? {
        return Err(closed_flow_error(core, &row.id).await);
    }
    let actor = row.identity_id.as_deref().map(identity_actor).unwrap_or_default();
    audit::record(
        core,
        NewAuditEvent {
            actor: &actor,
            action: "flow.deny",
            target: &row.id,
            remote_addr,
            detail: serde_json::json!({ "client_id": row.client_id }).to_string(),
        },
    )
    .await;
    Ok(authorization_response(
        &row.redirect_uri,
        &[("error", "access_denied"), ("error_description", "the request was denied")],
        row.state.as_deref(),
        &grants::issuer(core),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(lifetime_text(900), "15 minutes");
        assert_eq!(lifetime_text(60), "1 minute");
        assert_eq!(lifetime_text(90), "90 seconds");
        assert_eq!(lifetime_text(1), "1 second");
    }

    #[test]
    fn authorization_response_appends_to_the_query() {
        assert_eq!(
            authorization_response("https://a.example/cb", &[("code", "c1")], Some("s t"), "https://gw"),
            "https://a.example/cb?code=c1&state=s+t&iss=https%3A%2F%2Fgw"
        );
        assert_eq!(
            authorization_response("https://a.example/cb?x=1", &[("code", "c")], None, "i"),
            "https://a.example/cb?x=1&code=c&iss=i"
        );
        assert_eq!(
            authorization_response("cursor://a/cb?", &[("code", "c")], Some(""), "i"),
            "cursor://a/cb?code=c&state=&iss=i"
        );
    }
}

/// Properties of the authorization response over generated input (SECURITY.md):
/// whatever the state holds, the client gets it back as one value, after the
/// registered URI's own query, and nothing can change where the browser goes.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_response_goes_to_the_redirect_uri_with_state_and_iss_as_sent(
            host in "[a-z]{1,8}\\.example",
            path in "(/[a-z0-9]{1,6}){0,3}",
            query in prop::option::of("[a-z]{1,4}=[a-z0-9]{0,4}(&[a-z]{1,4}=[a-z0-9]{0,4}){0,2}&?"),
            code in "[A-Za-z0-9_-]{1,40}",
            state in prop::option::of(any::<String>()),
            issuer in "https://[a-z]{1,8}\\.example(:[0-9]{2,5})?",
        ) {
            let redirect_uri = match &query {
                Some(query) => format!("https://{host}{path}?{query}"),
                None => format!("https://{host}{path}"),
            };
            let response = authorization_response(&redirect_uri, &[("code", &code)], state.as_deref(), &issuer);
            let url = url::Url::parse(&response).expect("the response is a URL");
            let registered = url::Url::parse(&redirect_uri).expect("the redirect URI is a URL");
            prop_assert_eq!(url.origin(), registered.origin());
            prop_assert_eq!(url.path(), registered.path());
            prop_assert_eq!(url.fragment(), None);
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let own: Vec<(String, String)> = registered.query_pairs().into_owned().collect();
            prop_assert_eq!(&pairs[..own.len()], own.as_slice(), "the registered query comes first, unchanged");
            let mut added = vec![("code".to_owned(), code.clone())];
            if let Some(state) = &state {
                added.push(("state".to_owned(), state.clone()));
            }
            added.push(("iss".to_owned(), issuer.clone()));
            prop_assert_eq!(&pairs[own.len()..], added.as_slice(), "code, state and iss exactly as given");
        }
    }
}
