//! What `/mcp` knows about the configured upstream MCP servers ("services")
//! and the caller's credential for each, both fetched from the control plane
//! (`ListServices`, `GetUpstreamCredential`, `ReportUpstreamUnauthorized`)
//! and cached: the catalogue for [`SERVICES_MAX_AGE`] (a stale one keeps
//! serving while the control plane is away), a credential for its
//! `cache_ttl_ms`. A credential is dropped as soon as an upstream refuses it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};

use crate::cp_client::{ControlPlaneClient, CpError, CpResultExt as _};
use crate::pb::{self, ErrorReason};

/// How long the service catalogue is used before it is fetched again.
pub(crate) const SERVICES_MAX_AGE: Duration = Duration::from_secs(10);

/// How Gatehouse authenticates to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMode {
    None,
    StaticHeaders,
    Oauth,
}

/// One upstream MCP server, as `/mcp` uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    /// `[a-z0-9-]{1,32}`: the prefix of its tools, prompts and resources.
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) url: String,
    pub(crate) auth_mode: AuthMode,
    pub(crate) allow_tools: Vec<String>,
    pub(crate) deny_tools: Vec<String>,
    /// 0 = the gateway default.
    pub(crate) timeout_ms: u32,
}

impl Service {
    fn from_pb(server: pb::McpServer) -> Self {
        let auth_mode = match pb::UpstreamAuthMode::try_from(server.auth_mode) {
            Ok(pb::UpstreamAuthMode::Oauth) => AuthMode::Oauth,
            Ok(pb::UpstreamAuthMode::StaticHeaders) => AuthMode::StaticHeaders,
            _ => AuthMode::None,
        };
        let display_name = if server.display_name.is_empty() {
            server.name.clone()
        } else {
            server.display_name
        };
        Self {
            name: server.name,
            display_name,
            url: server.url,
            auth_mode,
            allow_tools: server.allow_tools,
            deny_tools: server.deny_tools,
            timeout_ms: server.timeout_ms,
        }
    }

    /// Whether upstream tool `name` is exposed: in the allow list when there
    /// is one, and never in the deny list.
    pub(crate) fn exposes_tool(&self, name: &str) -> bool {
        let allowed = self.allow_tools.is_empty() || self.allow_tools.iter().any(|t| t == name);
        allowed && !self.deny_tools.iter().any(|t| t == name)
    }

    /// The per-call time limit.
    pub(crate) fn timeout(&self, default: Duration) -> Duration {
        if self.timeout_ms == 0 {
            default
        } else {
            Duration::from_millis(u64::from(self.timeout_ms))
        }
    }
}

/// The catalogue of services, in the control plane's order.
pub(crate) type Services = Arc<Vec<Service>>;

/// Fetches the catalogue.
pub(crate) async fn list_services(cp: &ControlPlaneClient) -> Result<Services, CpError> {
    let reply = cp
        .tokens()
        .list_services(pb::ListServicesRequest {})
        .await
        .cp("ListServices")?;
    Ok(Arc::new(reply.servers.into_iter().map(Service::from_pb).collect()))
}

/// Headers to send to one service on behalf of one grant. Never printed.
#[derive(Clone)]
pub(crate) struct Credential {
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Passed back when the upstream refuses it, so one refresh serves every replica.
    pub(crate) version: String,
    pub(crate) cache_ttl: Duration,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field(
                "headers",
                &self.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            )
            .field("version", &self.version)
            .finish()
    }
}

/// Why there is no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("not connected")]
    NotConnected,
    #[error("needs to be authorized again")]
    NeedsReauth,
    /// The grant was revoked since its caller was cached.
    #[error("the grant is no longer valid")]
    InvalidGrant,
    #[error("no such service")]
    UnknownService,
    /// The control plane could not produce it now (a static header missing,
    /// a refresh that did not finish).
    #[error("unavailable")]
    ServiceUnavailable,
    /// The control plane did not answer.
    #[error("the control plane is unavailable")]
    ControlPlaneDown,
    #[error("the control plane failed")]
    Internal,
}

impl From<CpError> for CredentialError {
    fn from(err: CpError) -> Self {
        match err {
            CpError::Refused { reason, .. } => match reason {
                ErrorReason::NotConnected => Self::NotConnected,
                ErrorReason::NeedsReauth => Self::NeedsReauth,
                ErrorReason::InvalidGrant => Self::InvalidGrant,
                ErrorReason::NotFound => Self::UnknownService,
                _ => Self::ServiceUnavailable,
            },
            CpError::Unavailable => Self::ControlPlaneDown,
            CpError::Internal => Self::Internal,
        }
    }
}

fn credential_from_pb(credential: pb::UpstreamCredential) -> Result<Credential, CredentialError> {
    let mut headers = Vec::with_capacity(credential.headers.len());
    for header in credential.headers {
        let name = HeaderName::try_from(header.name.as_str());
        let value = HeaderValue::try_from(header.value);
        match (name, value) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.push((name, value));
            }
            // The header's name may be logged; its value never.
            _ => {
                tracing::error!(target: "gatehouse::mcp", header = %header.name, "the control plane sent an upstream header that is not valid HTTP");
                return Err(CredentialError::Internal);
            }
        }
    }
    Ok(Credential {
        headers,
        version: credential.version,
        cache_ttl: Duration::from_millis(u64::from(credential.cache_ttl_ms)),
    })
}

/// `GetUpstreamCredential`.
pub(crate) async fn fetch_credential(
    cp: &ControlPlaneClient,
    grant_id: &str,
    service: &str,
) -> Result<Credential, CredentialError> {
    let reply = cp
        .tokens()
        .get_upstream_credential(pb::GetUpstreamCredentialRequest {
            grant_id: grant_id.to_owned(),
            service: service.to_owned(),
        })
        .await
        .cp("GetUpstreamCredential")?;
    credential_from_pb(reply)
}

/// `ReportUpstreamUnauthorized`: one refresh across every replica, then the new
/// credential; `after_refresh` says the refreshed one was refused too, so the
/// connection is marked as needing the person again.
pub(crate) async fn report_unauthorized(
    cp: &ControlPlaneClient,
    grant_id: &str,
    service: &str,
    version: &str,
    after_refresh: bool,
) -> Result<Credential, CredentialError> {
    let reply = cp
        .tokens()
        .report_upstream_unauthorized(pb::ReportUpstreamUnauthorizedRequest {
            grant_id: grant_id.to_owned(),
            service: service.to_owned(),
            version: version.to_owned(),
            after_refresh,
        })
        .await
        .cp("ReportUpstreamUnauthorized")?;
    credential_from_pb(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_deny_lists_filter_upstream_names() {
        let mut service = Service {
            name: "notes".into(),
            display_name: "Notes".into(),
            url: "http://x".into(),
            auth_mode: AuthMode::None,
            allow_tools: vec![],
            deny_tools: vec!["delete".into()],
            timeout_ms: 0,
        };
        assert!(service.exposes_tool("read"));
        assert!(!service.exposes_tool("delete"));
        service.allow_tools = vec!["read".into(), "delete".into()];
        assert!(service.exposes_tool("read"));
        assert!(!service.exposes_tool("write"));
        assert!(!service.exposes_tool("delete"), "deny wins over allow");
        assert_eq!(service.timeout(Duration::from_secs(10)), Duration::from_secs(10));
        service.timeout_ms = 250;
        assert_eq!(service.timeout(Duration::from_secs(10)), Duration::from_millis(250));
    }

    #[test]
    fn credentials_never_print_their_values() {
        let credential = credential_from_pb(pb::UpstreamCredential {
            headers: vec![pb::UpstreamHeader {
                name: "authorization".into(),
                value: "Bearer secret-upstream-token".into(),
            }],
            version: "3".into(),
            cache_ttl_ms: 1000,
            ..Default::default()
        })
        .unwrap();
        let printed = format!("{credential:?}");
        assert!(printed.contains("authorization") && !printed.contains("secret-upstream-token"));
    }
}
