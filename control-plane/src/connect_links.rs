//! Connect links: the URL `/mcp` hands a client when a tool needs a service
//! the caller has not connected (URL-mode elicitation, or a tool error with the
//! link).
//!
//! Security: the link id is 256 random bits, stored only hashed, single-use and
//! short-lived; it is bound to the grant and identity that asked, and opening
//! it requires the browser to prove that same identity (SPEC-NOTES §5.4, the
//! phishing rule). The URL carries nothing else: no identity, no service secret.

use crate::identities::IdentityKind;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::gateway::ConnectLinkRow;
use crate::{Core, audit, connections, flows, virtual_keys};

/// Lifetime of a connect link.
pub const LINK_SECONDS: i64 = 10 * 60;

/// A new link, with the id (shown once, in the URL).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: Secret,
    pub url: String,
    pub expires_at: i64,
}

/// Creates a link for `grant_id`'s identity to connect `service`.
pub async fn create(core: &Core, grant_id: &str, identity_id: &str, service: &str) -> Result<NewLink, StoreError> {
    let id = secret::generate(prefix::CONNECT_LINK);
    let now = core.now();
    let expires_at = now + LINK_SECONDS;
    core.store
        .insert_connect_link(
            &ConnectLinkRow {
                link_hash: id.hash(),
                grant_id: grant_id.to_string(),
                identity_id: identity_id.to_string(),
                service: service.to_string(),
                expires_at,
                used_at: None,
            },
            now,
        )
        .await?;
    let url = format!("{}/connect/{}", core.config.public_url, id.expose());
    Ok(NewLink { id, url, expires_at })
}

// === Opening a link ===

/// Why a link cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("unknown connect link")]
    NotFound,
    #[error("this connect link has expired; ask your application again")]
    Expired,
    #[error("this connect link was already used")]
    AlreadyUsed,
    #[error("enter the virtual key this connection is for")]
    VirtualKeyRequired,
    #[error("this virtual key is unknown or revoked")]
    InvalidVirtualKey,
    #[error("this link belongs to another identity")]
    WrongIdentity,
    #[error("links of signed-in users cannot be opened here yet; connect the service from your application's consent page")]
    SignInRequired,
    #[error("open the link in a browser that keeps cookies")]
    BrowserRequired,
    #[error(transparent)]
    Connect(#[from] crate::connections::ConnectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the person opening a link must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    VirtualKey,
    /// An anonymous identity: the link is the only proof there is.
    LinkOnly,
    SignIn,
}

/// A link as its page shows it.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub service: String,
    pub display_name: String,
    pub proof: Proof,
    pub expires_at: i64,
}

/// The live link `link_id` names, its service (per-user OAuth) and the proof its identity needs.
async fn live_link(core: &Core, link_id: &Secret) -> Result<(ConnectLinkRow, crate::mcp_servers::McpServer, Proof), LinkError> {
    let row = core
        .store
        .get_connect_link(&link_id.hash())
        .await?
        .ok_or(LinkError::NotFound)?;
    if row.used_at.is_some() {
        return Err(LinkError::AlreadyUsed);
    }
    if row.expires_at <= core.now() {
        return Err(LinkError::Expired);
    }
    // A revoked grant or identity takes its links with it.
    match core.store.grant_owner(&row.grant_id).await? {
        Some(owner) if !owner.revoked && owner.identity_id == row.identity_id => {}
        _ => return Err(LinkError::NotFound),
    }
    let identity = core
        .store
        .get_identity(&row.identity_id)
        .await?
        .filter(|i| i.revoked_at.is_none())
        .ok_or(LinkError::NotFound)?;
    let proof = match IdentityKind::parse(&identity.kind) {
        Some(IdentityKind::VirtualKey) => Proof::VirtualKey,
        Some(IdentityKind::Anonymous) => Proof::LinkOnly,
        Some(IdentityKind::User) | None => Proof::SignIn,
    };
    let server = crate::connections::oauth_service(core, &row.service).await?;
    Ok((row, server, proof))
}

/// Describes a link without spending it.
pub async fn view(core: &Core, link_id: &Secret) -> Result<LinkView, LinkError> {
    let (row, server, proof) = live_link(core, link_id).await?;
    Ok(LinkView {
        service: server.name,
        display_name: server.display_name,
        proof,
        expires_at: row.expires_at,
    })
}

/// Opens a link for a person who proved its identity: spends it and begins
/// the upstream authorization for that identity. Returns the view and the
/// URL to send the browser to.
pub async fn open(
    core: &Core,
    link_id: &Secret,
    virtual_key: Option<&Secret>,
    browser_secret: &Secret,
    remote_addr: &str,
) -> Result<(LinkView, String), LinkError> {
    let (row, server, proof) = live_link(core, link_id).await?;
    // The upstream callback must come back to this browser (see `connections::complete`).
    if browser_secret.expose().len() < 32 {
        return Err(LinkError::BrowserRequired);
    }
    // Security: SPEC-NOTES §5.4 (phishing rule, C9), the person opening the
    // link must be the identity it was made for, proved the way that identity
    // is proved; a link forwarded to someone else connects nothing for them.
    match proof {
        Proof::VirtualKey => {
            let presented = virtual_key.ok_or(LinkError::VirtualKeyRequired)?;
            let key = virtual_keys::verify(core, presented)
                .await
                .map_err(|e| match e {
                    virtual_keys::VirtualKeyError::Store(e) => LinkError::Store(e),
                    _ => LinkError::InvalidVirtualKey,
                })?
                .ok_or(LinkError::InvalidVirtualKey)?;
            if key.identity_id != row.identity_id {
                tracing::warn!(target: "gatehouse::security", reason = "connect link opened with another identity's virtual key", service = %row.service, "connect link refused");
                return Err(LinkError::WrongIdentity);
            }
        }
        // Security: an anonymous (Skip) identity has nothing to prove it with;
        // the link itself (256 random bits, stored hashed, single-use, 10
        // minutes, bound to the grant that asked) is the only proof possible.
        Proof::LinkOnly => {}
        // Security: a user identity needs the same verified subject; sign-in
        // from a link is not offered yet, so the link is refused rather than
        // accepted on weaker proof.
        Proof::SignIn => return Err(LinkError::SignInRequired),
    }
    let now = core.now();
    // Invariant: one conditional update spends the link, so of two concurrent
    // opens exactly one goes on.
    if !core.store.use_connect_link(&row.link_hash, now).await? {
        return Err(LinkError::AlreadyUsed);
    }
    let url = match connections::begin(
        core,
        &server,
        connections::Origin {
            flow_id: None,
            identity_id: Some(&row.identity_id),
            link_id: Some(&row.link_hash),
            browser_secret_hash: Some(&browser_secret.hash()),
        },
    )
    .await
    {
        Ok(url) => url,
        Err(err) => {
            // Nothing was begun: the person may try the link again.
            core.store.release_connect_link(&row.link_hash).await?;
            return Err(err.into());
        }
    };
    audit::record(
        core,
        NewAuditEvent {
            actor: &flows::identity_actor(&row.identity_id),
            action: "connect_link.open",
            target: &row.service,
            remote_addr,
            detail: serde_json::json!({ "grant_id": row.grant_id }).to_string(),
        },
    )
    .await;
    let view = LinkView {
        service: server.name,
        display_name: server.display_name,
        proof,
        expires_at: row.expires_at,
    };
    Ok((view, url))
}
