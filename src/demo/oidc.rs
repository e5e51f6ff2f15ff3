//! The demo provider as an OpenID provider (OpenID Connect Core, Discovery): when an
//! authorization request asks for the `openid` scope, the code exchange also returns an ID
//! token signed with ES256 under a P-256 key generated at spawn; `/jwks` publishes the public
//! key and `/.well-known/openid-configuration` the endpoints. Gatehouse's user sign-in uses it
//! in development and in the tests.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::oauth::public_json;
use super::{OIDC_SCOPES, SCOPES, Shared, sha256};

/// The provider's signing key: ES256 (ECDSA P-256 with SHA-256), generated at spawn.
pub(crate) struct SigningKey {
    pair: EcdsaKeyPair,
    /// RFC 7638 thumbprint of the public key.
    kid: String,
    x: String,
    y: String,
}

impl SigningKey {
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the demo provider's signing key failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("loading the demo provider's signing key: {e}"))?;
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref().to_vec();
        anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 public key encoding");
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(sha256(&thumbprint_input));
        Ok(Self { pair, kid, x, y })
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Value {
        json!({ "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": self.kid, "use": "sig", "alg": "ES256" })
    }

    /// A compact JWS of `claims`, ES256 under this key.
    pub(crate) fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).ok()?)
        );
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }
}

/// The ID token for a code exchange whose request asked for `openid`.
pub(crate) fn id_token(shared: &Shared, client_id: &str, account: &str, nonce: Option<&str>) -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut claims = json!({
        "iss": shared.base_url,
        "sub": account,
        "aud": client_id,
        "iat": now,
        "exp": now + shared.config.access_token_ttl.as_secs().max(60),
        "email": format!("{account}@demo.test"),
        "email_verified": true,
        "preferred_username": account,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = Value::String(nonce.to_owned());
    }
    shared.signing_key.sign(&claims)
}

pub(crate) async fn openid_configuration(State(shared): State<Arc<Shared>>) -> Response {
    let base = &shared.base_url;
    let scopes: Vec<&str> = OIDC_SCOPES.iter().chain(SCOPES.iter()).copied().collect();
    public_json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": scopes,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "email_verified", "preferred_username"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

pub(crate) async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    public_json(json!({ "keys": [shared.signing_key.jwk()] }))
}
