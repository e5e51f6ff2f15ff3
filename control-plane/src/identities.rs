//! Identities: whom a grant acts for and whose connections it uses. A virtual
//! key's identity is made with the key (`virtual_keys`); a user's after a
//! verified sign-in (`sign_in`) or, only when configured, from a trusted
//! authenticating proxy (here); Skip makes an anonymous one for a single grant (here).
//!
//! Never accepts a user name nobody verified: `proxy_user` exists only behind
//! the `trust_proxy_user` switch.

use crate::Core;
use crate::secret;
use crate::store::StoreError;
use crate::store::identities::IdentityRow;

/// How an identity was proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    VirtualKey,
    User,
    Anonymous,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VirtualKey => "virtual_key",
            Self::User => "user",
            Self::Anonymous => "anonymous",
        }
    }

    /// The kind a stored value names, if any.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "virtual_key" => Some(Self::VirtualKey),
            "user" => Some(Self::User),
            "anonymous" => Some(Self::Anonymous),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the proxy user name must be 1-256 printable characters")]
    InvalidProxyUser,
    #[error("this identity was revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new anonymous identity (Skip): it exists only for the grant being issued.
pub async fn anonymous(core: &Core) -> Result<IdentityRow, StoreError> {
    let identity = IdentityRow {
        id: secret::random_id("idn_"),
        kind: IdentityKind::Anonymous.as_str().to_string(),
        display_name: "anonymous".to_string(),
        subject: None,
        created_at: core.now(),
        revoked_at: None,
    };
    core.store.insert_identity(&identity).await?;
    Ok(identity)
}

/// The user a trusted authenticating proxy named. The caller checks
/// `trust_proxy_user` first; the subject `proxy#<name>` keeps these users apart
/// from users proved by an OpenID provider (`<issuer>#<sub>`).
pub async fn proxy_user(core: &Core, name: &str) -> Result<IdentityRow, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(IdentityError::InvalidProxyUser);
    }
    let identity = core
        .store
        .upsert_identity_by_subject(&secret::random_id("idn_"), &format!("proxy#{name}"), name, core.now())
        .await?;
    if identity.revoked_at.is_some() {
        return Err(IdentityError::Revoked);
    }
    Ok(identity)
}
