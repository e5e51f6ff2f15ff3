//! `McpError`: every refusal of `/mcp`, mapped to a response here and nowhere
//! else. Before JSON-RPC: HTTP statuses (400, 401, 403, 405, 415, 503); the
//! authentication challenges follow RFC 6750 §3 and RFC 9728 §5.1
//! (SPEC-NOTES §2.3): every 401 carries `WWW-Authenticate` with
//! `resource_metadata` and `scope`; `error=` only when a token was sent.
//! After JSON-RPC parsing: a JSON-RPC error carrying the request's id
//! ([`RpcFailure`]), with HTTP 200 (404 for an unknown method on the
//! 2026-07-28 wire, 400 for its header and version errors).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::jsonrpc::{self, ParseError};
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
    /// GET and DELETE: Gatehouse opens no stream and issues no session (405).
    MethodNotAllowed,
    /// An `Origin` that is not Gatehouse's nor allow-listed (DNS rebinding): 403.
    ForbiddenOrigin,
    /// A POST body that is not `application/json`: 415.
    UnsupportedMediaType,
    /// A body that is not a JSON-RPC message: 400 with a JSON-RPC error without id.
    Malformed(ParseError),
    /// `MCP-Protocol-Version` names a revision Gatehouse does not speak: 400.
    UnsupportedVersion { requested: String },
    /// A batch on a revision after 2025-03-26: 400.
    BatchNotAllowed,
    /// 2026-07-28: a required header is missing or does not match the body: 400, -32020.
    HeaderMismatch { id: String, detail: String },
    /// 2026-07-28: the request's `_meta` lacks a required key: 400, -32602.
    InvalidMeta { id: String, missing: &'static str },
    /// 2026-07-28: serving the request needs a client capability it did not declare: 400, -32021.
    MissingCapability { id: String, capability: String },
    /// 2026-07-28: a modern revision Gatehouse does not speak: 400, -32022.
    UnsupportedModernVersion { id: String, requested: String },
    /// A JSON-RPC error answering request `id` (raw JSON).
    Rpc { id: String, failure: RpcFailure, modern: bool },
}

/// A JSON-RPC-level failure of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RpcFailure {
    /// -32601.
    MethodNotFound(String),
    /// -32602 with a message.
    InvalidParams(String),
    /// -32602 "Unknown tool: …" (also prompts and resources). Denied tools are
    /// unknown too: their existence is not revealed.
    Unknown { what: &'static str, name: String },
    /// -32042: the person must open `url` (a connect link) first.
    UrlElicitationRequired {
        elicitation_id: String,
        url: String,
        message: String,
    },
    /// -32603: an upstream failed; the message names the service, never a secret.
    Upstream(String),
    /// -32603 "internal error".
    Internal,
}

impl RpcFailure {
    fn code_message_data(&self) -> (i64, String, Option<serde_json::Value>) {
        match self {
            Self::MethodNotFound(method) => (jsonrpc::METHOD_NOT_FOUND, format!("Method not found: {method}"), None),
            Self::InvalidParams(message) => (jsonrpc::INVALID_PARAMS, format!("Invalid params: {message}"), None),
            Self::Unknown { what, name } => (jsonrpc::INVALID_PARAMS, format!("Unknown {what}: {name}"), None),
            Self::UrlElicitationRequired {
                elicitation_id,
                url,
                message,
            } => (
                jsonrpc::URL_ELICITATION_REQUIRED,
                message.clone(),
                Some(json!({
                    "elicitations": [{
                        "mode": "url",
                        "elicitationId": elicitation_id,
                        "url": url,
                        "message": message,
                    }]
                })),
            ),
            Self::Upstream(message) => (jsonrpc::INTERNAL_ERROR, message.clone(), None),
            Self::Internal => (jsonrpc::INTERNAL_ERROR, "internal error".to_owned(), None),
        }
    }
}

impl McpError {
    /// The JSON-RPC error body, for the errors that have one.
    pub(crate) fn rpc_body(&self) -> Option<Vec<u8>> {
        match self {
            Self::Rpc { id, failure, .. } => {
                let (code, message, data) = failure.code_message_data();
                Some(jsonrpc::error_response(id, code, &message, data.as_ref()))
            }
            Self::Malformed(err) => Some(jsonrpc::error_response("null", err.code(), &err.to_string(), None)),
            Self::UnsupportedVersion { requested } => Some(jsonrpc::error_response(
                "null",
                jsonrpc::INVALID_REQUEST,
                &format!("Unsupported MCP-Protocol-Version: {requested}"),
                Some(&json!({ "supported": super::wire::SUPPORTED_VERSIONS, "requested": requested })),
            )),
            Self::BatchNotAllowed => Some(jsonrpc::error_response(
                "null",
                jsonrpc::INVALID_REQUEST,
                "batches are accepted only on protocol revision 2025-03-26",
                None,
            )),
            Self::HeaderMismatch { id, detail } => Some(jsonrpc::error_response(
                id,
                jsonrpc::HEADER_MISMATCH,
                &format!("Header mismatch: {detail}"),
                None,
            )),
            Self::MissingCapability { id, capability } => Some(jsonrpc::error_response(
                id,
                jsonrpc::MISSING_REQUIRED_CLIENT_CAPABILITY,
                &format!("Missing required client capability: {capability}"),
                Some(&json!({ "requiredCapabilities": { capability.as_str(): {} } })),
            )),
            Self::InvalidMeta { id, missing } => Some(jsonrpc::error_response(
                id,
                jsonrpc::INVALID_PARAMS,
                &format!("Invalid params: missing _meta keys: {missing}"),
                None,
            )),
            Self::UnsupportedModernVersion { id, requested } => Some(jsonrpc::error_response(
                id,
                jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                Some(&json!({ "supported": super::wire::SUPPORTED_VERSIONS, "requested": requested })),
            )),
            Self::ForbiddenOrigin => Some(jsonrpc::error_response(
                "null",
                jsonrpc::INVALID_REQUEST,
                "Origin not allowed",
                None,
            )),
            _ => None,
        }
    }
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
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
            McpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static("POST"))],
            )
                .into_response(),
            McpError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(json!({"error": "unsupported_media_type", "error_description": "POST application/json"})),
            )
                .into_response(),
            McpError::ForbiddenOrigin => {
                tracing::info!(target: "gatehouse::security", reason = "origin_not_allowed", "/mcp request from a foreign origin refused");
                let body = self.rpc_body().unwrap_or_default();
                json_bytes(StatusCode::FORBIDDEN, body)
            }
            McpError::Rpc { ref failure, modern, .. } => {
                // 2026-07-28: an unknown method is 404, telling it from a legacy 404.
                let status = if modern && matches!(failure, RpcFailure::MethodNotFound(_)) {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                let body = self.rpc_body().unwrap_or_default();
                json_bytes(status, body)
            }
            McpError::Malformed(_)
            | McpError::UnsupportedVersion { .. }
            | McpError::BatchNotAllowed
            | McpError::HeaderMismatch { .. }
            | McpError::InvalidMeta { .. }
            | McpError::MissingCapability { .. }
            | McpError::UnsupportedModernVersion { .. } => {
                let body = self.rpc_body().unwrap_or_default();
                json_bytes(StatusCode::BAD_REQUEST, body)
            }
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
            (McpError::MethodNotAllowed, 405),
            (McpError::ForbiddenOrigin, 403),
            (McpError::UnsupportedMediaType, 415),
            (McpError::Malformed(ParseError::NotJson), 400),
            (
                McpError::UnsupportedVersion {
                    requested: "1999-01-01".into(),
                },
                400,
            ),
            (McpError::BatchNotAllowed, 400),
            (
                McpError::HeaderMismatch {
                    id: "1".into(),
                    detail: "x".into(),
                },
                400,
            ),
            (
                McpError::Rpc {
                    id: "1".into(),
                    failure: RpcFailure::MethodNotFound("x".into()),
                    modern: true,
                },
                404,
            ),
            (
                McpError::Rpc {
                    id: "1".into(),
                    failure: RpcFailure::MethodNotFound("x".into()),
                    modern: false,
                },
                200,
            ),
        ];
        for (err, status) in cases {
            let name = format!("{err:?}");
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            if name.starts_with("NoCredentials") || name.starts_with("InvalidToken") || name.starts_with("InsufficientScope") {
                assert!(response.headers().contains_key(header::WWW_AUTHENTICATE), "{name}");
            }
        }
    }

    #[test]
    fn url_elicitation_errors_carry_the_link_and_the_request_id() {
        let err = McpError::Rpc {
            id: r#""req-7""#.into(),
            failure: RpcFailure::UrlElicitationRequired {
                elicitation_id: "el_1".into(),
                url: "https://gw.example.com/connect/cl_x".into(),
                message: "Connect Notes to continue.".into(),
            },
            modern: false,
        };
        let body: serde_json::Value = serde_json::from_slice(&err.rpc_body().unwrap()).unwrap();
        assert_eq!(body["id"], "req-7");
        assert_eq!(body["error"]["code"], -32042);
        let elicitation = &body["error"]["data"]["elicitations"][0];
        assert_eq!(elicitation["mode"], "url");
        assert_eq!(elicitation["elicitationId"], "el_1");
        assert_eq!(elicitation["url"], "https://gw.example.com/connect/cl_x");
    }
}
