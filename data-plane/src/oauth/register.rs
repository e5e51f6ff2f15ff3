//! `POST /register`: RFC 7591 dynamic client registration. The JSON body is
//! parsed here into `RegisterClientRequest`; the control plane applies the
//! redirect-URI policy and issues the client (and, for confidential clients,
//! its secret, returned once). Every refusal is a 400 JSON error, never a page
//! or a redirect (SPEC-NOTES §3.9).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{Endpoint, ErrorCode, OAuthError};
use crate::AppState;
use crate::cp_client::CpResultExt as _;
use crate::pb::{ClientAuthMethod, RegisterClientRequest, RegisterClientResponse};

/// RFC 7591 §2 client metadata, as far as Gatehouse uses it. Unknown members
/// are ignored (RFC 7591 §2: "The authorization server MUST ignore any client
/// metadata sent by the client that it does not understand"); `null` reads as
/// absent.
#[derive(Debug, Default, Deserialize)]
struct ClientMetadata {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
    application_type: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
    contacts: Option<Vec<String>>,
}

impl ClientMetadata {
    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        serde_json::from_slice(body).map_err(|err| {
            // Position and kind only: serde's message may quote the offending value.
            let what = match err.classify() {
                serde_json::error::Category::Data => "a member has the wrong type",
                serde_json::error::Category::Eof => "the JSON ends early",
                serde_json::error::Category::Syntax | serde_json::error::Category::Io => "the body is not JSON",
            };
            OAuthError::new(
                ErrorCode::InvalidClientMetadata,
                format!(
                    "the body must be a JSON object of client metadata: {what} (line {}, column {})",
                    err.line(),
                    err.column()
                ),
            )
        })
    }

    fn into_request(self, remote_addr: String) -> RegisterClientRequest {
        RegisterClientRequest {
            redirect_uris: self.redirect_uris.unwrap_or_default(),
            token_endpoint_auth_method: self.token_endpoint_auth_method.unwrap_or_default(),
            grant_types: self.grant_types.unwrap_or_default(),
            response_types: self.response_types.unwrap_or_default(),
            client_name: self.client_name.unwrap_or_default(),
            client_uri: self.client_uri.unwrap_or_default(),
            logo_uri: self.logo_uri.unwrap_or_default(),
            scope: self.scope.unwrap_or_default(),
            application_type: self.application_type.unwrap_or_default(),
            software_id: self.software_id.unwrap_or_default(),
            software_version: self.software_version.unwrap_or_default(),
            contacts: self.contacts.unwrap_or_default(),
            remote_addr,
        }
    }
}

/// The RFC 7591 §3.2.1 response: what was registered, plus the secret once.
fn registration_response(registered: RegisterClientResponse) -> Value {
    let mut body = Map::new();
    let client = registered.client.unwrap_or_default();
    body.insert("client_id".into(), client.client_id.into());
    body.insert("client_id_issued_at".into(), client.created_at.into());
    if !registered.client_secret.is_empty() {
        body.insert("client_secret".into(), registered.client_secret.into());
        body.insert("client_secret_expires_at".into(), client.client_secret_expires_at.into());
    }
    body.insert("redirect_uris".into(), client.redirect_uris.into());
    let auth_method = match ClientAuthMethod::try_from(client.auth_method) {
        Ok(ClientAuthMethod::None) => Some("none"),
        Ok(ClientAuthMethod::ClientSecretPost) => Some("client_secret_post"),
        Ok(ClientAuthMethod::ClientSecretBasic) => Some("client_secret_basic"),
        Ok(ClientAuthMethod::Unspecified) | Err(_) => None,
    };
    if let Some(auth_method) = auth_method {
        body.insert("token_endpoint_auth_method".into(), auth_method.into());
    }
    body.insert("grant_types".into(), client.grant_types.into());
    body.insert("response_types".into(), client.response_types.into());
    for (name, value) in [
        ("client_name", client.client_name),
        ("client_uri", client.client_uri),
        ("logo_uri", client.logo_uri),
        ("scope", client.scope),
        ("application_type", client.application_type),
    ] {
        if !value.is_empty() {
            body.insert(name.into(), value.into());
        }
    }
    Value::Object(body)
}

/// `POST /register`.
pub(crate) async fn post_register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let request = ClientMetadata::parse(&body)?.into_request(peer.ip().to_string());
    let registered = state
        .cp
        .flows()
        .register_client(request)
        .await
        .cp("RegisterClient")
        .map_err(|err| OAuthError::from_cp(err, Endpoint::Register))?;
    let mut response = (StatusCode::CREATED, Json(registration_response(registered))).into_response();
    // Security: the response may carry the client secret (RFC 7591 §3.2.1, OAuth 2.1 "no-store").
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pb::Client;

    #[test]
    fn malformed_json_is_invalid_client_metadata() {
        for body in [&b"not json"[..], b"[]", b"{\"redirect_uris\": \"https://a/cb\"}", b""] {
            let err = ClientMetadata::parse(body).unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::InvalidClientMetadata,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_error_description_never_quotes_what_was_sent() {
        let err = ClientMetadata::parse(br#"{"client_name": ["s3cret-value"]}"#).unwrap_err();
        let description = err.description.unwrap();
        assert!(!description.contains("s3cret-value"), "{description}");
        assert!(description.contains("wrong type"), "{description}");
    }

    #[test]
    fn unknown_and_null_members_are_ignored() {
        let metadata = ClientMetadata::parse(br#"{"redirect_uris":["https://a/cb"],"client_name":null,"jwks":{}}"#).unwrap();
        let request = metadata.into_request("127.0.0.1".into());
        assert_eq!(request.redirect_uris, vec!["https://a/cb"]);
        assert_eq!(request.client_name, "");
        assert_eq!(request.remote_addr, "127.0.0.1");
    }

    #[test]
    fn the_response_carries_the_secret_and_its_expiry_only_when_issued() {
        let client = Client {
            client_id: "cli_1".into(),
            client_name: "Tool".into(),
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            auth_method: ClientAuthMethod::ClientSecretBasic as i32,
            grant_types: vec!["authorization_code".into()],
            response_types: vec!["code".into()],
            created_at: 1_700_000_000,
            ..Default::default()
        };
        let body = registration_response(RegisterClientResponse {
            client: Some(client.clone()),
            client_secret: "s3cret".into(),
        });
        assert_eq!(
            body,
            json!({
                "client_id": "cli_1",
                "client_id_issued_at": 1_700_000_000,
                "client_secret": "s3cret",
                "client_secret_expires_at": 0,
                "redirect_uris": ["http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "client_name": "Tool",
            })
        );
        let public = registration_response(RegisterClientResponse {
            client: Some(Client {
                auth_method: ClientAuthMethod::None as i32,
                ..client
            }),
            client_secret: String::new(),
        });
        assert!(public.get("client_secret").is_none());
        assert!(public.get("client_secret_expires_at").is_none());
        assert_eq!(public["token_endpoint_auth_method"], "none");
    }
}
