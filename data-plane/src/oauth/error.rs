//! `OAuthError`: the RFC 6749 §5.2 error response of `/token`, `/revoke` and
//! `/register` (RFC 7591 §3.2.2, RFC 7009 §2.2.1), and the one place that maps
//! a control-plane refusal to an OAuth error code. `/authorize` never answers
//! with this type: before its client and redirect URI are verified it shows an
//! error page (`consent::error::PageError`), after that the control plane
//! builds the error redirect.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::cp_client::CpError;
use crate::pb::ErrorReason;

/// Seconds a client should wait before retrying a 503 or 429.
pub(crate) const RETRY_AFTER_SECONDS: &str = "5";

/// The `error` codes Gatehouse answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 8707 §2: the resource is not this gateway.
    InvalidTarget,
    /// RFC 7009 §2.2.1.
    UnsupportedTokenType,
    /// RFC 7591 §3.2.2.
    InvalidRedirectUri,
    /// RFC 7591 §3.2.2.
    InvalidClientMetadata,
    /// The control plane did not answer: 503 with `Retry-After`.
    TemporarilyUnavailable,
    /// Too many requests: 429 with `Retry-After` (wire code `temporarily_unavailable`).
    RateLimited,
    ServerError,
}

impl ErrorCode {
    /// The wire string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::TemporarilyUnavailable | ErrorCode::RateLimited => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }

    /// RFC 6749 §5.2: 400 unless the client failed to authenticate (401).
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Which endpoint is answering, where one reason maps differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Register,
    Token,
    Revoke,
}

/// An OAuth error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) code: ErrorCode,
    /// Human-readable, never a secret.
    pub(crate) description: Option<String>,
    /// The client authenticated with HTTP Basic: `invalid_client` then carries
    /// `WWW-Authenticate: Basic` (RFC 6749 §5.2).
    pub(crate) used_basic: bool,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: Some(description.into()),
            used_basic: false,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// Marks that the client used HTTP Basic.
    pub(crate) fn with_basic(mut self, used_basic: bool) -> Self {
        self.used_basic = used_basic;
        self
    }

    /// The one mapping from a control-plane failure to an OAuth error, decided
    /// on the reason alone (docs/consent-flow.md, "Errors").
    pub(crate) fn from_cp(err: CpError, endpoint: Endpoint) -> Self {
        let (reason, description) = match err {
            CpError::Unavailable => {
                return Self::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the authorization server is busy, retry later",
                );
            }
            CpError::Internal => return Self::new(ErrorCode::ServerError, "internal error"),
            CpError::Refused { reason, description } => (reason, description),
        };
        let code = match reason {
            ErrorReason::InvalidClient => ErrorCode::InvalidClient,
            // A redirect URI refused at registration is RFC 7591's code; at /token
            // a redirect_uri that differs from the authorization request's is a
            // grant problem (RFC 6749 §5.2 has no invalid_redirect_uri).
            ErrorReason::InvalidRedirectUri if endpoint == Endpoint::Register => ErrorCode::InvalidRedirectUri,
            ErrorReason::InvalidRedirectUri => ErrorCode::InvalidGrant,
            ErrorReason::InvalidGrant | ErrorReason::Expired | ErrorReason::AlreadyUsed | ErrorReason::NotFound => {
                ErrorCode::InvalidGrant
            }
            ErrorReason::InvalidScope => ErrorCode::InvalidScope,
            ErrorReason::InvalidTarget => ErrorCode::InvalidTarget,
            ErrorReason::UnsupportedGrantType => ErrorCode::UnsupportedGrantType,
            ErrorReason::UnauthorizedClient | ErrorReason::Denied => ErrorCode::UnauthorizedClient,
            ErrorReason::InvalidClientMetadata => ErrorCode::InvalidClientMetadata,
            ErrorReason::UnsupportedTokenType => ErrorCode::UnsupportedTokenType,
            ErrorReason::RateLimited => ErrorCode::RateLimited,
            ErrorReason::UpstreamUnavailable => ErrorCode::TemporarilyUnavailable,
            // Registration refuses metadata, not requests.
            _ if endpoint == Endpoint::Register => ErrorCode::InvalidClientMetadata,
            _ => ErrorCode::InvalidRequest,
        };
        Self {
            code,
            description: (!description.is_empty()).then_some(description),
            used_basic: false,
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::from(self.code.as_str()));
        if let Some(description) = &self.description {
            body.insert("error_description".into(), Value::from(description.as_str()));
        }
        Value::Object(body)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::InvalidClient {
            tracing::info!(target: "gatehouse::security", reason = "invalid_client", used_basic = self.used_basic, "client authentication failed");
        }
        let mut response = (self.code.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.code == ErrorCode::InvalidClient && self.used_basic {
            // Security: RFC 6749 §5.2, a client that tried HTTP Basic gets the challenge back.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
        }
        if matches!(self.code, ErrorCode::TemporarilyUnavailable | ErrorCode::RateLimited) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(reason: ErrorReason) -> CpError {
        CpError::Refused {
            reason,
            description: "why".into(),
        }
    }

    #[test]
    fn error_json_has_error_and_optional_description() {
        let err = OAuthError::invalid_request("missing code");
        assert_eq!(
            err.body(),
            json!({"error": "invalid_request", "error_description": "missing code"})
        );
        let err = OAuthError {
            code: ErrorCode::InvalidGrant,
            description: None,
            used_basic: false,
        };
        assert_eq!(err.body(), json!({"error": "invalid_grant"}));
    }

    #[test]
    fn invalid_client_is_401_and_challenges_only_after_basic() {
        let response = OAuthError::new(ErrorCode::InvalidClient, "no")
            .with_basic(true)
            .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"gatehouse\"");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let response = OAuthError::new(ErrorCode::InvalidClient, "no").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn an_unavailable_control_plane_is_503_with_retry_after() {
        let response = OAuthError::from_cp(CpError::Unavailable, Endpoint::Token).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        let err = OAuthError::from_cp(CpError::Unavailable, Endpoint::Revoke);
        assert_eq!(err.body()["error"], "temporarily_unavailable");
    }

    #[test]
    fn refusal_reasons_map_to_oauth_codes() {
        let cases = [
            (ErrorReason::InvalidClient, Endpoint::Token, "invalid_client"),
            (ErrorReason::Expired, Endpoint::Token, "invalid_grant"),
            (ErrorReason::AlreadyUsed, Endpoint::Token, "invalid_grant"),
            (ErrorReason::InvalidGrant, Endpoint::Token, "invalid_grant"),
            (ErrorReason::InvalidRedirectUri, Endpoint::Token, "invalid_grant"),
            (ErrorReason::InvalidRedirectUri, Endpoint::Register, "invalid_redirect_uri"),
            (
                ErrorReason::InvalidClientMetadata,
                Endpoint::Register,
                "invalid_client_metadata",
            ),
            (ErrorReason::InvalidRequest, Endpoint::Register, "invalid_client_metadata"),
            (ErrorReason::InvalidRequest, Endpoint::Token, "invalid_request"),
            (ErrorReason::InvalidScope, Endpoint::Token, "invalid_scope"),
            (ErrorReason::InvalidTarget, Endpoint::Token, "invalid_target"),
            (ErrorReason::UnsupportedGrantType, Endpoint::Token, "unsupported_grant_type"),
            (ErrorReason::UnauthorizedClient, Endpoint::Token, "unauthorized_client"),
            (ErrorReason::UnsupportedTokenType, Endpoint::Revoke, "unsupported_token_type"),
            (ErrorReason::WrongBrowser, Endpoint::Token, "invalid_request"),
        ];
        for (reason, endpoint, code) in cases {
            let err = OAuthError::from_cp(refused(reason), endpoint);
            assert_eq!(err.code.as_str(), code, "{reason:?} at {endpoint:?}");
            assert_eq!(err.description.as_deref(), Some("why"));
        }
        assert_eq!(
            OAuthError::from_cp(CpError::Internal, Endpoint::Token).code,
            ErrorCode::ServerError
        );
    }
}
