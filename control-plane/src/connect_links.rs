//! Connect links: the URL `/mcp` hands a client when a tool needs a service
//! the caller has not connected (URL-mode elicitation, or a tool error with the
//! link).
//!
//! Security: the link id is 256 random bits, stored only hashed, single-use and
//! short-lived; it is bound to the grant and identity that asked, and opening
//! it requires the browser to prove that same identity (SPEC-NOTES §5.4, the
//! phishing rule). The URL carries nothing else: no identity, no service secret.

use crate::Core;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::gateway::ConnectLinkRow;

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
