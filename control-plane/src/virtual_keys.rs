//! Virtual keys: secrets an administrator issues; knowing one proves its identity.
//!
//! Security: the secret is shown once, at creation, and stored only as its
//! SHA-256; looking it up by hash makes the comparison independent of where
//! the stored and presented values differ.

use crate::Core;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::virtual_keys::{NewVirtualKey, VirtualKeyRow};

#[derive(Debug, thiserror::Error)]
pub enum VirtualKeyError {
    #[error("name must be 1-64 printable characters")]
    InvalidName,
    #[error("no virtual key {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issues a key; returns it and its secret (shown once).
pub async fn create(core: &Core, name: &str) -> Result<(VirtualKeyRow, Secret), VirtualKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(VirtualKeyError::InvalidName);
    }
    let secret = secret::generate(prefix::VIRTUAL_KEY);
    // The prefix shown to administrators: the readable part and 4 characters, far
    // too little to guess the rest.
    let shown: String = secret.expose().chars().take(prefix::VIRTUAL_KEY.len() + 4).collect();
    let id = secret::random_id("vk_");
    let identity_id = secret::random_id("idn_");
    let row = core
        .store
        .insert_virtual_key(
            &NewVirtualKey {
                id: &id,
                name,
                secret_hash: &secret.hash(),
                prefix: &shown,
                identity_id: &identity_id,
            },
            core.now(),
        )
        .await?;
    Ok((row, secret))
}

/// Revokes a key and everything its identity was granted.
pub async fn revoke(core: &Core, id: &str) -> Result<VirtualKeyRow, VirtualKeyError> {
    let key = core
        .store
        .revoke_virtual_key(id, core.now())
        .await?
        .ok_or_else(|| VirtualKeyError::NotFound(id.to_string()))?;
    core.events
        .publish(crate::events::Invalidation::IdentityRevoked(key.identity_id.clone()));
    Ok(key)
}

/// The unrevoked key a presented secret proves, if any.
pub async fn verify(core: &Core, presented: &Secret) -> Result<Option<VirtualKeyRow>, VirtualKeyError> {
    Ok(core.store.find_virtual_key_by_hash(&presented.hash()).await?)
}
