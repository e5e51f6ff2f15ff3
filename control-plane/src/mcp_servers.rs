//! The registry of upstream MCP servers ("services"): what a server entry is,
//! how it is validated, and seeding from the config file.
//!
//! The config file may seed entries (source "config"); administrators add,
//! change and remove entries over gRPC (source "admin"). A config entry is
//! re-applied at every start, so the file stays the truth for what it names.

use serde::{Deserialize, Serialize};

/// How Gatehouse authenticates to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credential.
    #[default]
    None,
    /// Fixed headers from the environment or a file.
    StaticHeaders,
    /// Per-identity OAuth connections.
    Oauth,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::StaticHeaders => "static_headers",
            Self::Oauth => "oauth",
        }
    }
}

/// A header sent to a static-headers upstream; its value is named, never inlined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHeader {
    pub name: String,
    #[serde(default)]
    pub value_env: String,
    #[serde(default)]
    pub value_file: String,
}

/// OAuth settings of a per-user upstream; empty fields are discovered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamOAuth {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub registration_endpoint: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: String,
    pub client_secret_file: String,
    pub scopes: Vec<String>,
    pub client_name: String,
    pub resource: String,
}

/// An upstream MCP server entry. The same shape is read from `[[mcp_servers]]`
/// in the config file and stored as the `settings` JSON of its row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    pub url: String,
    #[serde(default)]
    pub auth_mode: AuthMode,
    #[serde(default)]
    pub static_headers: Vec<StaticHeader>,
    #[serde(default)]
    pub oauth: UpstreamOAuth,
    #[serde(default)]
    pub allow_tools: Vec<String>,
    #[serde(default)]
    pub deny_tools: Vec<String>,
    #[serde(default)]
    pub timeout_ms: u32,
    /// "config" or "admin"; set by the store.
    #[serde(skip)]
    pub source: String,
    #[serde(skip)]
    pub created_at: i64,
    #[serde(skip)]
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum McpServerError {
    #[error("name must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidName,
    #[error("url must be an absolute http or https URL without a fragment")]
    InvalidUrl,
    #[error("static_headers need a name and exactly one of value_env or value_file")]
    InvalidStaticHeader,
    #[error("auth_mode static_headers needs at least one static header")]
    MissingStaticHeaders,
    #[error("oauth endpoints must be absolute http or https URLs")]
    InvalidOAuthEndpoint,
    #[error("an MCP server named {0:?} already exists")]
    AlreadyExists(String),
    #[error("no MCP server named {0:?}")]
    NotFound(String),
}

impl McpServer {
    /// Checks an entry and fills defaults (display name).
    pub fn validate(mut self) -> Result<Self, McpServerError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(McpServerError::InvalidName);
        }
        if !is_http_url(&self.url) {
            return Err(McpServerError::InvalidUrl);
        }
        for header in &self.static_headers {
            let sources = usize::from(!header.value_env.is_empty()) + usize::from(!header.value_file.is_empty());
            if header.name.is_empty() || http::HeaderName::from_bytes(header.name.as_bytes()).is_err() || sources != 1 {
                return Err(McpServerError::InvalidStaticHeader);
            }
        }
        if self.auth_mode == AuthMode::StaticHeaders && self.static_headers.is_empty() {
            return Err(McpServerError::MissingStaticHeaders);
        }
        let o = &self.oauth;
        for endpoint in [
            &o.authorization_endpoint,
            &o.token_endpoint,
            &o.revocation_endpoint,
            &o.registration_endpoint,
        ] {
            if !endpoint.is_empty() && !is_http_url(endpoint) {
                return Err(McpServerError::InvalidOAuthEndpoint);
            }
        }
        if self.display_name.trim().is_empty() {
            self.display_name = self.name.clone();
        }
        Ok(self)
    }
}

fn is_http_url(value: &str) -> bool {
    url::Url::parse(value)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.fragment().is_none())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, url: &str) -> McpServer {
        McpServer {
            name: name.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(server("Notes", "https://x/mcp").validate(), Err(McpServerError::InvalidName));
        assert_eq!(server("-n", "https://x/mcp").validate(), Err(McpServerError::InvalidName));
        assert_eq!(server("n", "ftp://x/mcp").validate(), Err(McpServerError::InvalidUrl));
        assert_eq!(server("n", "https://x/mcp#f").validate(), Err(McpServerError::InvalidUrl));
        let mut s = server("n", "https://x/mcp");
        s.auth_mode = AuthMode::StaticHeaders;
        assert_eq!(s.clone().validate(), Err(McpServerError::MissingStaticHeaders));
        s.static_headers = vec![StaticHeader {
            name: "Authorization".into(),
            value_env: "E".into(),
            value_file: "f".into(),
        }];
        assert_eq!(s.clone().validate(), Err(McpServerError::InvalidStaticHeader));
        s.static_headers[0].value_file.clear();
        let ok = s.validate().unwrap();
        assert_eq!(ok.display_name, "n");
    }
}

// === Registry operations ===

use crate::events::Invalidation;
use crate::{Core, StartError};

/// Applies the config file's `[[mcp_servers]]` (source "config"): each is
/// validated and inserted or replaced; entries added by administrators stay.
pub async fn seed_from_config(core: &Core) -> Result<(), StartError> {
    for server in &core.config.mcp_servers {
        let seed_err = |reason: String| StartError::Seed {
            name: server.name.clone(),
            reason,
        };
        let server = server.clone().validate().map_err(|e| seed_err(e.to_string()))?;
        core.store
            .upsert_mcp_server(&server, "config", core.now())
            .await
            .map_err(|e| seed_err(e.to_string()))?;
    }
    Ok(())
}

/// Adds an entry (source "admin").
pub async fn create(core: &Core, server: McpServer) -> Result<McpServer, RegistryError> {
    let server = server.validate()?;
    if !core.store.insert_mcp_server(&server, "admin", core.now()).await? {
        return Err(McpServerError::AlreadyExists(server.name).into());
    }
    core.events.publish(Invalidation::ServicesChanged);
    get(core, &server.name).await
}

/// Replaces an entry's settings.
pub async fn update(core: &Core, server: McpServer) -> Result<McpServer, RegistryError> {
    let server = server.validate()?;
    if !core.store.update_mcp_server(&server, core.now()).await? {
        return Err(McpServerError::NotFound(server.name).into());
    }
    core.events.publish(Invalidation::ServicesChanged);
    get(core, &server.name).await
}

/// One entry.
pub async fn get(core: &Core, name: &str) -> Result<McpServer, RegistryError> {
    core.store
        .get_mcp_server(name)
        .await?
        .ok_or_else(|| McpServerError::NotFound(name.to_string()).into())
}

/// Removes an entry and its connections; returns how many connections went with it.
pub async fn delete(core: &Core, name: &str) -> Result<u64, RegistryError> {
    let deleted = core
        .store
        .delete_mcp_server(name)
        .await?
        .ok_or_else(|| McpServerError::NotFound(name.to_string()))?;
    core.events.publish(Invalidation::ServicesChanged);
    Ok(deleted)
}

/// A registry operation's failure: a rule broken, or the store.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] McpServerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
