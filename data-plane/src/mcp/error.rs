//! `McpError`: what `/mcp` answers before (and, until the gateway lands,
//! instead of) JSON-RPC. The authentication challenges follow RFC 6750 §3 and
//! RFC 9728 §5.1 (SPEC-NOTES §2.3): every 401 carries `WWW-Authenticate`
//! with `resource_metadata` and `scope`; `error=` only when a token was sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth::error::RETRY_AFTER_SECONDS;
use crate::oauth::metadata::MCP_SCOPE;

/// Why `/mcp` did not serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum McpError {
    /// No bearer token: 401, challenge without `error`.
    NoCredentials { resource_metadata: String },
    /// A token the control plane does not accept (unknown, expired, revoked,
    /// for another resource): 401 `invalid_token`.
    InvalidToken { resource_metadata: String },
    /// A valid token without the `mcp` scope: 403 `insufficient_scope`.
    InsufficientScope { resource_metadata: String },
    /// A malformed request (a token in the query string, several
    /// Authorization headers): 400 `invalid_request`.
    InvalidRequest {
        resource_metadata: String,
        description: &'static str,
    },
    /// The control plane did not answer: 503 with `Retry-After`.
    Unavailable,
    /// The control plane failed: 500.
    Internal,
    /// POST after authentication, until the gateway exists: 501 with a JSON-RPC error.
    NotImplemented,
    /// GET and DELETE: no stream and no sessions yet (405).
    MethodNotAllowed,
}

/// The `WWW-Authenticate` value of a challenge.
pub(crate) fn challenge(error: Option<&str>, resource_metadata: &str) -> String {
    match error {
        None => format!(r#"Bearer resource_metadata="{resource_metadata}", scope="{MCP_SCOPE}""#),
        Some("insufficient_scope") => {
            format!(r#"Bearer error="insufficient_scope", scope="{MCP_SCOPE}", resource_metadata="{resource_metadata}""#)
        }
        Some(error) => format!(r#"Bearer error="{error}", resource_metadata="{resource_metadata}", scope="{MCP_SCOPE}""#),
    }
}

fn with_challenge(status: StatusCode, error: Option<&str>, resource_metadata: &str, description: Option<&str>) -> Response {
    let body = match (error, description) {
        (Some(error), Some(description)) => json!({"error": error, "error_description": description}),
        (Some(error), None) => json!({"error": error}),
        (None, _) => json!({"error": "unauthorized", "error_description": "a bearer token is required"}),
    };
    let mut response = (status, Json(body)).into_response();
    // Invariant: public_url passed config validation (an http(s) URL, no
    // control characters), so the challenge is a valid header value; a
    // fallback keeps the status even if it were not.
    let value =
        HeaderValue::from_str(&challenge(error, resource_metadata)).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    response
}

impl IntoResponse for McpError {
    fn into_response(self) -> Response {
        match self {
            McpError::NoCredentials { resource_metadata } => {
                with_challenge(StatusCode::UNAUTHORIZED, None, &resource_metadata, None)
            }
            McpError::InvalidToken { resource_metadata } => {
                tracing::info!(target: "gatehouse::security", reason = "invalid_token", "bearer token refused at /mcp");
                with_challenge(StatusCode::UNAUTHORIZED, Some("invalid_token"), &resource_metadata, None)
            }
            McpError::InsufficientScope { resource_metadata } => {
                with_challenge(StatusCode::FORBIDDEN, Some("insufficient_scope"), &resource_metadata, None)
            }
            McpError::InvalidRequest {
                resource_metadata,
                description,
            } => with_challenge(
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                &resource_metadata,
                Some(description),
            ),
            McpError::Unavailable => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "temporarily_unavailable", "error_description": "retry later"})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
                response
            }
            McpError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "server_error", "error_description": "internal error"})),
            )
                .into_response(),
            McpError::NotImplemented => (
                StatusCode::NOT_IMPLEMENTED,
                Json(json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": {"code": -32601, "message": "the gateway is not implemented yet"},
                })),
            )
                .into_response(),
            McpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static("POST"))],
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RM: &str = "https://gw.example.com/.well-known/oauth-protected-resource/mcp";

    #[test]
    fn challenges_are_exact() {
        assert_eq!(
            challenge(None, RM),
            r#"Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp""#
        );
        assert_eq!(
            challenge(Some("invalid_token"), RM),
            r#"Bearer error="invalid_token", resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp""#
        );
        assert_eq!(
            challenge(Some("insufficient_scope"), RM),
            r#"Bearer error="insufficient_scope", scope="mcp", resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp""#
        );
    }

    #[test]
    fn statuses() {
        let rm = || RM.to_owned();
        let cases = [
            (McpError::NoCredentials { resource_metadata: rm() }, 401),
            (McpError::InvalidToken { resource_metadata: rm() }, 401),
            (McpError::InsufficientScope { resource_metadata: rm() }, 403),
            (
                McpError::InvalidRequest {
                    resource_metadata: rm(),
                    description: "x",
                },
                400,
            ),
            (McpError::Unavailable, 503),
            (McpError::NotImplemented, 501),
            (McpError::MethodNotAllowed, 405),
        ];
        for (err, status) in cases {
            let name = format!("{err:?}");
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            if matches!(status, 400 | 401 | 403) {
                assert!(response.headers().contains_key(header::WWW_AUTHENTICATE), "{name}");
            }
        }
    }
}
