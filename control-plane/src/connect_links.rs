//! Connect links: the URL `/mcp` hands a client when a tool needs a service
//! the caller has not connected (URL-mode elicitation, or a tool error with the
//! link).
//!
//! Security: the link id is 256 random bits, stored only hashed, single-use and
//! short-lived; it is bound to the grant and identity that asked, and opening
//! it requires the browser to prove that same identity (SPEC-NOTES §5.4, the
//! phishing rule). The URL carries nothing else: no identity, no service secret.
//! A signed-in user's link is proved by signing in again at the OpenID
//! provider (`sign_in::begin_for_link`, then `open_signed_in` once the ID token
//! is verified): the link is spent only when the verified subject is its own.

use crate::identities::IdentityKind;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::gateway::ConnectLinkRow;
use crate::{Core, audit, connections, flows, sign_in, virtual_keys};

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
    #[error("this link belongs to another account; sign in with the account your application uses")]
    WrongAccount,
    #[error("user sign-in is not configured, so this link of a signed-in user cannot be opened")]
    SignInUnavailable,
    #[error("open the link in a browser that keeps cookies")]
    BrowserRequired,
    #[error(transparent)]
    Connect(#[from] crate::connections::ConnectError),
    #[error(transparent)]
    SignIn(Box<sign_in::SignInError>),
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
    /// For `Proof::SignIn`: the sign-in button's label (empty without sign-in configured).
    pub sign_in_label: String,
}

/// A live link with what opening it needs.
struct Live {
    row: ConnectLinkRow,
    server: crate::mcp_servers::McpServer,
    proof: Proof,
    /// Users only: the identity's verified subject.
    subject: Option<String>,
}

impl Live {
    fn view(&self, core: &Core) -> LinkView {
        let sign_in_label = match (self.proof, core.config.sign_in.as_ref()) {
            (Proof::SignIn, Some(config)) => config.display_name.clone(),
            _ => String::new(),
        };
        LinkView {
            service: self.server.name.clone(),
            display_name: self.server.display_name.clone(),
            proof: self.proof,
            expires_at: self.row.expires_at,
            sign_in_label,
        }
    }
}

/// The live link of hash `link_hash`, its service (per-user OAuth) and the proof its identity needs.
async fn live_link(core: &Core, link_hash: &str) -> Result<Live, LinkError> {
    let row = core.store.get_connect_link(link_hash).await?.ok_or(LinkError::NotFound)?;
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
    Ok(Live {
        row,
        server,
        proof,
        subject: identity.subject,
    })
}

/// Describes a link without spending it.
pub async fn view(core: &Core, link_id: &Secret) -> Result<LinkView, LinkError> {
    Ok(live_link(core, &link_id.hash()).await?.view(core))
}

/// Opens a link for a person who proved its identity: spends it and begins
/// the upstream authorization for that identity. Returns the view and the
/// URL to send the browser to. For a signed-in user's link nothing is spent
/// yet: the URL is the OpenID provider's, where the person signs in first.
pub async fn open(
    core: &Core,
    link_id: &Secret,
    virtual_key: Option<&Secret>,
    browser_secret: &Secret,
    remote_addr: &str,
) -> Result<(LinkView, String), LinkError> {
    let live = live_link(core, &link_id.hash()).await?;
    // The upstream callback must come back to this browser (see `connections::complete`).
    if browser_secret.expose().len() < 32 {
        return Err(LinkError::BrowserRequired);
    }
    // Security: SPEC-NOTES §5.4 (phishing rule, C9), the person opening the
    // link must be the identity it was made for, proved the way that identity
    // is proved; a link forwarded to someone else connects nothing for them.
    match live.proof {
        Proof::VirtualKey => {
            let presented = virtual_key.ok_or(LinkError::VirtualKeyRequired)?;
            let key = virtual_keys::verify(core, presented)
                .await
                .map_err(|e| match e {
                    virtual_keys::VirtualKeyError::Store(e) => LinkError::Store(e),
                    _ => LinkError::InvalidVirtualKey,
                })?
                .ok_or(LinkError::InvalidVirtualKey)?;
            if key.identity_id != live.row.identity_id {
                tracing::warn!(target: "gatehouse::security", reason = "connect link opened with another identity's virtual key", service = %live.row.service, "connect link refused");
                return Err(LinkError::WrongIdentity);
            }
        }
        // Security: an anonymous (Skip) identity has nothing to prove it with;
        // the link itself (256 random bits, stored hashed, single-use, 10
        // minutes, bound to the grant that asked) is the only proof possible.
        Proof::LinkOnly => {}
        // Security: a user identity is proved only by a verified sign-in as
        // the same subject. Nothing is spent here: the sign-in attempt is
        // bound to the link and to this browser, and `open_signed_in` (after
        // the ID token is verified) decides and spends.
        Proof::SignIn => {
            if core.config.sign_in.is_none() {
                return Err(LinkError::SignInUnavailable);
            }
            let url = sign_in::begin_for_link(core, &live.row.link_hash, &live.row.identity_id, &browser_secret.hash())
                .await
                .map_err(|e| LinkError::SignIn(Box::new(e)))?;
            audit::record(
                core,
                NewAuditEvent {
                    actor: "",
                    action: "connect_link.sign_in_begin",
                    target: &live.row.service,
                    remote_addr,
                    detail: serde_json::json!({ "grant_id": live.row.grant_id }).to_string(),
                },
            )
            .await;
            return Ok((live.view(core), url));
        }
    }
    spend_and_begin(core, live, &browser_secret.hash(), remote_addr).await
}

/// Opens a signed-in user's link once sign-in verified `subject`
/// (`<issuer>#<sub>`, from `sign_in::complete`) in the browser whose connect
/// cookie hashes to `browser_secret_hash`: spends it and begins the upstream
/// authorization. Returns the view and the upstream URL.
pub async fn open_signed_in(
    core: &Core,
    link_hash: &str,
    subject: &str,
    browser_secret_hash: &str,
    remote_addr: &str,
) -> Result<(LinkView, String), LinkError> {
    let live = live_link(core, link_hash).await?;
    // Security: SPEC-NOTES §5.4 (phishing rule, C9), the verified subject must
    // be exactly the link identity's; a link forwarded to someone who signs in
    // as themselves connects nothing, and the link stays unspent for its owner.
    let own = live.proof == Proof::SignIn
        && live
            .subject
            .as_deref()
            .is_some_and(|own| secret::constant_time_eq(own.as_bytes(), subject.as_bytes()));
    if !own {
        tracing::warn!(target: "gatehouse::security", reason = "connect link signed in as another account", service = %live.row.service, "connect link refused");
        return Err(LinkError::WrongAccount);
    }
    spend_and_begin(core, live, browser_secret_hash, remote_addr).await
}

/// Spends a proved link and begins the upstream authorization for its
/// identity, bound to the browser (`browser_secret_hash`) that proved it.
async fn spend_and_begin(
    core: &Core,
    live: Live,
    browser_secret_hash: &str,
    remote_addr: &str,
) -> Result<(LinkView, String), LinkError> {
    let view = live.view(core);
    let Live { row, server, proof, .. } = live;
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
            browser_secret_hash: Some(browser_secret_hash),
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
    let proved_by = match proof {
        Proof::VirtualKey => "virtual_key",
        Proof::LinkOnly => "link",
        Proof::SignIn => "sign_in",
    };
    audit::record(
        core,
        NewAuditEvent {
            actor: &flows::identity_actor(&row.identity_id),
            action: "connect_link.open",
            target: &row.service,
            remote_addr,
            detail: serde_json::json!({ "grant_id": row.grant_id, "proof": proved_by }).to_string(),
        },
    )
    .await;
    Ok((view, url))
}
