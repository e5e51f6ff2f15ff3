//! Discovery documents: RFC 9728 protected-resource metadata for `/mcp` and
//! RFC 8414 authorization-server metadata. Each is served at two paths with
//! identical content, and the issuer is `public_url` byte for byte everywhere
//! (docs/consent-flow.md, "Names"; SPEC-NOTES §2.2, §3.2).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

/// The scope Gatehouse issues.
pub(crate) const MCP_SCOPE: &str = "mcp";

/// The resource identifier of the gateway: `{public_url}/mcp`.
pub(crate) fn resource(public_url: &str) -> String {
    format!("{public_url}/mcp")
}

/// Where the protected-resource document of `/mcp` lives (RFC 9728 §3: the
/// well-known segment inserted before the resource path).
pub(crate) fn resource_metadata_url(public_url: &str) -> String {
    format!("{public_url}/.well-known/oauth-protected-resource/mcp")
}

/// RFC 9728 document.
pub(crate) fn protected_resource_document(public_url: &str) -> Value {
    json!({
        "resource": resource(public_url),
        "authorization_servers": [public_url],
        "scopes_supported": [MCP_SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "Gatehouse",
    })
}

/// RFC 8414 document (also served as OpenID discovery, which must then carry
/// `code_challenge_methods_supported`).
pub(crate) fn authorization_server_document(public_url: &str) -> Value {
    let client_auth = ["none", "client_secret_post", "client_secret_basic"];
    json!({
        "issuer": public_url,
        "authorization_endpoint": format!("{public_url}/authorize"),
        "token_endpoint": format!("{public_url}/token"),
        "registration_endpoint": format!("{public_url}/register"),
        "revocation_endpoint": format!("{public_url}/revoke"),
        "scopes_supported": [MCP_SCOPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
    })
}

/// `GET /.well-known/oauth-protected-resource` and `…/oauth-protected-resource/mcp`.
pub(crate) async fn get_protected_resource(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(protected_resource_document(&state.config.public_url))
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub(crate) async fn get_authorization_server(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(authorization_server_document(&state.config.public_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://gw.example.com";

    #[test]
    fn resource_metadata_names_the_mcp_resource_and_the_issuer() {
        assert_eq!(
            protected_resource_document(ISSUER),
            json!({
                "resource": "https://gw.example.com/mcp",
                "authorization_servers": ["https://gw.example.com"],
                "scopes_supported": ["mcp"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Gatehouse",
            })
        );
        assert_eq!(
            resource_metadata_url(ISSUER),
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn authorization_server_metadata_advertises_what_gatehouse_supports() {
        let doc = authorization_server_document(ISSUER);
        assert_eq!(doc["issuer"], ISSUER);
        assert_eq!(doc["authorization_endpoint"], "https://gw.example.com/authorize");
        assert_eq!(doc["token_endpoint"], "https://gw.example.com/token");
        assert_eq!(doc["registration_endpoint"], "https://gw.example.com/register");
        assert_eq!(doc["revocation_endpoint"], "https://gw.example.com/revoke");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(doc["grant_types_supported"], json!(["authorization_code", "refresh_token"]));
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["none", "client_secret_post", "client_secret_basic"])
        );
        assert_eq!(doc["client_id_metadata_document_supported"], true);
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    }
}
