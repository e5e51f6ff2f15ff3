//! User sign-in: the OpenID Connect authorization code flow with PKCE at the
//! configured provider, and verification of the ID token it returns. The
//! verified subject becomes the flow's identity (kind `user`), or, for a
//! sign-in begun from a connect link, must be the link identity's own subject
//! before the link is spent (`connect_links::open_signed_in`).
//!
//! Security: a user identity exists only for a subject read from an ID token
//! whose signature (RS256 or ES256, key from the provider's JWKS), issuer,
//! audience, expiry and nonce were verified here (OpenID Connect Core §3.1.3.7);
//! nothing a browser or data plane sends names a user. The state is single-use,
//! short-lived, stored hashed and bound to the flow's browser; the nonce is
//! stored only hashed. Signatures are checked with aws-lc-rs, never by hand.
//!
//! Never logs a token, and fetches nothing except through `outbound`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::flows::{self, FlowError, OpenFlow};
use crate::secret::{self, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::reseal;
use crate::store::upstream::{AttemptRow, NewAttempt};
use crate::upstream::{self, AuthMethod, AuthServer, AuthorizationRequest, ClientCredentials, Pkce, UpstreamError};
use crate::vault::VaultError;
use crate::{Core, audit, connect_links};

/// `upstream_attempts.kind` and `service` of a sign-in.
pub const KIND_SIGN_IN: &str = "sign_in";
/// Clock skew tolerated on `exp` and `iat`, in seconds.
const SKEW: i64 = 60;
/// An ID token issued longer ago than this is not from the exchange just made.
const MAX_AGE: i64 = 10 * 60;
/// How long discovery documents and key sets are reused.
const CACHE_FOR: Duration = Duration::from_secs(60 * 60);

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_display_name() -> String {
    "Sign in".to_string()
}

/// The `[control_plane.sign_in]` table: the OpenID provider people sign in at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInConfig {
    /// The provider's issuer; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Gatehouse's client id at the provider (redirect URI `<public_url>/signin/callback`).
    pub client_id: String,
    /// Environment variable holding the client secret (confidential clients).
    #[serde(default)]
    pub client_secret_env: String,
    /// File holding the client secret (confidential clients).
    #[serde(default)]
    pub client_secret_file: String,
    /// Scopes requested; `openid` is always added.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The sign-in button's label.
    #[serde(default = "default_display_name")]
    pub display_name: String,
}

impl Default for SignInConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_env: String::new(),
            client_secret_file: String::new(),
            scopes: default_scopes(),
            display_name: default_display_name(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("user sign-in is not configured")]
    NotConfigured,
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("unknown sign-in attempt")]
    UnknownState,
    #[error("this sign-in attempt has expired; sign in again")]
    StateExpired,
    #[error("this sign-in attempt was already used")]
    StateUsed,
    #[error("this sign-in attempt belongs to another browser")]
    WrongBrowser,
    #[error("the sign-in response names another issuer than the provider's (RFC 9207)")]
    IssuerMismatch,
    #[error("the sign-in response has no code")]
    MissingCode,
    #[error("the provider: {0}")]
    Provider(#[from] UpstreamError),
    #[error("the ID token was refused: {0}")]
    IdToken(#[from] IdTokenError),
    #[error("this user's identity was revoked")]
    IdentityRevoked,
    #[error("the sign-in was not completed: {0}")]
    NotSignedIn(String),
    #[error(transparent)]
    Link(#[from] crate::connect_links::LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

fn config(core: &Core) -> Result<&SignInConfig, SignInError> {
    core.config.sign_in.as_ref().ok_or(SignInError::NotConfigured)
}

fn redirect_uri(core: &Core) -> String {
    format!("{}/signin/callback", core.config.public_url.trim_end_matches('/'))
}

fn verifier_aad(state_hash: &str) -> crate::vault::Aad<'_> {
    reseal::aad("upstream_attempts", "verifier_ct", state_hash, "", KIND_SIGN_IN)
}

/// What a sign-in attempt is for: a flow's identity page, or a connect link
/// of a user identity (bound to the browser that opened it).
#[derive(Debug, Clone, Copy)]
struct AttemptFor<'a> {
    flow_id: Option<&'a str>,
    identity_id: Option<&'a str>,
    link_id: Option<&'a str>,
    browser_secret_hash: Option<&'a str>,
}

/// Identity page, User: the provider's authorization URL.
pub async fn begin(core: &Core, flow: &OpenFlow, remote_addr: &str) -> Result<String, SignInError> {
    let url = begin_attempt(
        core,
        AttemptFor {
            flow_id: Some(&flow.row.id),
            identity_id: None,
            link_id: None,
            browser_secret_hash: None,
        },
    )
    .await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: "",
            action: "flow.sign_in_begin",
            target: &flow.row.id,
            remote_addr,
            detail: String::new(),
        },
    )
    .await;
    Ok(url)
}

/// Connect link of a user identity: the provider's authorization URL, for an
/// attempt bound to the link (`link_hash`), its identity and this browser
/// (`browser_secret_hash`, of the connect cookie). Spends nothing of the link.
pub async fn begin_for_link(
    core: &Core,
    link_hash: &str,
    identity_id: &str,
    browser_secret_hash: &str,
) -> Result<String, SignInError> {
    // Security: SPEC-NOTES §5.4 (phishing rule), the callback must come back
    // to the browser that opened the link (checked in `complete` before the
    // state is spent), so a provider URL forwarded to someone else signs in
    // nobody for this link.
    begin_attempt(
        core,
        AttemptFor {
            flow_id: None,
            identity_id: Some(identity_id),
            link_id: Some(link_hash),
            browser_secret_hash: Some(browser_secret_hash),
        },
    )
    .await
}

/// Stores a new sign-in attempt for `origin`; returns the provider's authorization URL.
async fn begin_attempt(core: &Core, origin: AttemptFor<'_>) -> Result<String, SignInError> {
    let config = config(core)?;
    let provider = discover(core, &config.issuer).await?;
    // Security: state and nonce are 256 random bits, stored only hashed; the
    // PKCE verifier only sealed to this attempt's row (RFC 9700 §2.1.1).
    let state = secret::generate(prefix::STATE);
    let state_hash = state.hash();
    let nonce = secret::generate("");
    let nonce_hash = nonce.hash();
    let pkce = Pkce::new();
    let verifier = core.vault.seal_secret(verifier_aad(&state_hash), &pkce.verifier)?;
    let redirect_uri = redirect_uri(core);
    let now = core.now();
    core.store
        .insert_upstream_attempt(
            &NewAttempt {
                state_hash: &state_hash,
                kind: KIND_SIGN_IN,
                flow_id: origin.flow_id,
                identity_id: origin.identity_id,
                link_id: origin.link_id,
                service: KIND_SIGN_IN,
                verifier,
                nonce_hash: Some(&nonce_hash),
                browser_secret_hash: origin.browser_secret_hash,
                redirect_uri: &redirect_uri,
                expires_at: now + core.config.lifetimes.upstream_state,
            },
            now,
        )
        .await?;
    let mut scopes: Vec<&str> = vec!["openid"];
    scopes.extend(
        config
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "openid" && !s.is_empty()),
    );
    let url = upstream::authorization_url(
        &provider.authorization_endpoint,
        &AuthorizationRequest {
            client_id: &config.client_id,
            redirect_uri: &redirect_uri,
            state: &state,
            code_challenge: &pkce.challenge,
            scope: &scopes.join(" "),
            resource: None,
            nonce: Some(&nonce),
        },
    )?;
    Ok(url)
}

pub use crate::upstream::Callback;

/// Where the browser goes after a completed sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The flow to go back to (empty for a connect link).
    pub flow_id: String,
    /// For a connect link: the upstream authorization URL (the link is spent).
    pub continue_url: String,
}

/// Completes sign-in. For a flow: sets its identity to the verified user and
/// returns the flow to go back to; a provider error (the person cancelled)
/// leaves a notice on the flow and changes nothing else. For a connect link:
/// requires the verified user to be the link's own, spends the link and
/// returns the upstream authorization URL.
pub async fn complete(core: &Core, callback: Callback<'_>) -> Result<SignedIn, SignInError> {
    let config = config(core)?;
    let attempt = upstream::live_attempt(core, callback.state, KIND_SIGN_IN)
        .await
        .map_err(|refused| match refused {
            Ok(upstream::AttemptRefusal::Unknown) => SignInError::UnknownState,
            Ok(upstream::AttemptRefusal::Used) => SignInError::StateUsed,
            Ok(upstream::AttemptRefusal::Expired) => SignInError::StateExpired,
            Err(err) => err.into(),
        })?;
    let state_hash = attempt.state_hash.clone();
    let now = core.now();
    if let Some(link_hash) = attempt.link_id.clone() {
        return complete_for_link(core, config, &callback, &attempt, &link_hash).await;
    }
    let flow_id = attempt.flow_id.clone().ok_or(SignInError::UnknownState)?;
    // Security: the state is bound to the browser whose flow started sign-in
    // (login CSRF, RFC 9700 §4.7); it is proved before the state is spent.
    let flow = match flows::open(core, &flow_id, callback.browser_secret).await {
        Ok(flow) => flow,
        Err(FlowError::WrongBrowser) => {
            tracing::warn!(target: "gatehouse::security", reason = "sign-in state presented by another browser", flow_id, "sign-in callback refused");
            return Err(SignInError::WrongBrowser);
        }
        Err(err) => return Err(err.into()),
    };
    // Invariant: one conditional update in the store consumes the state; one callback wins.
    if !core.store.consume_upstream_attempt(&state_hash, now).await? {
        return Err(SignInError::StateUsed);
    }
    let (subject, claims) = match verify_callback(core, config, &callback, &attempt).await? {
        Verified::Refused(notice) => {
            core.store.set_flow_notice(&flow.row.id, &notice).await?;
            return Ok(SignedIn {
                flow_id: flow.row.id,
                continue_url: String::new(),
            });
        }
        Verified::Subject { subject, claims } => (subject, claims),
    };
    let identity = core
        .store
        .upsert_identity_by_subject(&secret::random_id("idn_"), &subject, &claims.display_name(), core.now())
        .await?;
    if identity.revoked_at.is_some() || identity.kind != "user" {
        tracing::warn!(target: "gatehouse::security", reason = "sign-in of a revoked identity", identity = %identity.id, "sign-in refused");
        return Err(SignInError::IdentityRevoked);
    }
    // Replaces any earlier choice and discards the connections made for it.
    flows::set_identity(core, &flow, &identity.id, &identity.kind, callback.remote_addr).await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: &flows::identity_actor(&identity.id),
            action: "flow.sign_in",
            target: &flow.row.id,
            remote_addr: callback.remote_addr,
            detail: json!({ "subject": subject }).to_string(),
        },
    )
    .await;
    Ok(SignedIn {
        flow_id: flow.row.id,
        continue_url: String::new(),
    })
}

/// The connect-link half of `complete`.
async fn complete_for_link(
    core: &Core,
    config: &SignInConfig,
    callback: &Callback<'_>,
    attempt: &AttemptRow,
    link_hash: &str,
) -> Result<SignedIn, SignInError> {
    // Security: SPEC-NOTES §5.4 (phishing rule) and login CSRF (RFC 9700
    // §4.7), the state is bound to the browser that opened the link (its
    // connect cookie); it is proved before the state is spent, so a provider
    // URL or callback forwarded to another browser neither completes nor burns
    // the person's attempt.
    let bound = attempt.browser_secret_hash.as_deref().unwrap_or_default();
    let presented = callback.link_browser_secret.hash();
    if bound.is_empty()
        || callback.link_browser_secret.expose().is_empty()
        || !secret::constant_time_eq(bound.as_bytes(), presented.as_bytes())
    {
        tracing::warn!(target: "gatehouse::security", reason = "connect-link sign-in state presented by another browser", "sign-in callback refused");
        return Err(SignInError::WrongBrowser);
    }
    // Invariant: one conditional update in the store consumes the state; one callback wins.
    if !core.store.consume_upstream_attempt(&attempt.state_hash, core.now()).await? {
        return Err(SignInError::StateUsed);
    }
    let subject = match verify_callback(core, config, callback, attempt).await? {
        Verified::Refused(notice) => return Err(SignInError::NotSignedIn(notice)),
        Verified::Subject { subject, .. } => subject,
    };
    // The verified subject must be the link's own: `open_signed_in` decides,
    // and spends the link only then.
    let (_, continue_url) = connect_links::open_signed_in(core, link_hash, &subject, bound, callback.remote_addr).await?;
    Ok(SignedIn {
        flow_id: String::new(),
        continue_url,
    })
}

/// What the provider's answer proved.
enum Verified {
    /// The provider answered with an error (the person cancelled): a notice.
    Refused(String),
    /// A verified subject (`<issuer>#<sub>`) and the token's claims.
    Subject { subject: String, claims: IdTokenClaims },
}

/// The one path from a spent sign-in state to a verified subject: the
/// provider's issuer (RFC 9207), its error if any, the code exchange (PKCE)
/// and the ID token's verification (signature, issuer, audience, expiry, nonce).
async fn verify_callback(
    core: &Core,
    config: &SignInConfig,
    callback: &Callback<'_>,
    attempt: &AttemptRow,
) -> Result<Verified, SignInError> {
    let provider = discover(core, &config.issuer).await?;
    // Security: RFC 9207, an `iss` naming another server is a mix-up.
    let iss_wrong = !callback.iss.is_empty() && callback.iss != provider.issuer;
    let iss_missing = callback.iss.is_empty() && provider.authorization_response_iss_parameter_supported;
    if iss_wrong || iss_missing {
        tracing::warn!(target: "gatehouse::security", reason = "sign-in response from another issuer", iss = %upstream::printable(callback.iss), "sign-in callback refused");
        return Err(SignInError::IssuerMismatch);
    }
    if !callback.error.is_empty() {
        let error = upstream::printable(callback.error);
        let description = upstream::printable(callback.error_description);
        let notice = if description.is_empty() {
            format!("{} said: {error}", config.display_name)
        } else {
            format!("{} said: {error} ({description})", config.display_name)
        };
        return Ok(Verified::Refused(notice));
    }
    if callback.code.expose().is_empty() {
        return Err(SignInError::MissingCode);
    }
    let verifier = core
        .vault
        .open_secret(verifier_aad(&attempt.state_hash), &attempt.verifier_ct)?;
    let secret = upstream::read_secret(&config.client_secret_env, &config.client_secret_file)?;
    let method = AuthMethod::choose(secret.is_some(), &provider.token_endpoint_auth_methods_supported).ok_or_else(|| {
        UpstreamError::Config("the provider supports neither client_secret_basic nor client_secret_post".into())
    })?;
    let credentials = ClientCredentials {
        client_id: config.client_id.clone(),
        secret,
        method,
    };
    let tokens = upstream::exchange_code(
        core,
        &provider.token_endpoint,
        &credentials,
        callback.code.expose(),
        &verifier,
        &attempt.redirect_uri,
        None,
    )
    .await?;
    let id_token = tokens.id_token.as_ref().ok_or(IdTokenError::Missing)?;
    let expected = Expected {
        issuer: &provider.issuer,
        client_id: &config.client_id,
        nonce_hash: attempt.nonce_hash.as_deref().unwrap_or_default(),
        now: core.now(),
    };
    let claims = match verify_with_provider_keys(core, &provider, id_token.expose(), &expected).await {
        Ok(claims) => claims,
        Err(err) => {
            tracing::warn!(target: "gatehouse::security", reason = "ID token refused", error = %err, "sign-in refused");
            return Err(err);
        }
    };
    // By this point the subject is verified: signature, issuer, audience, expiry, nonce.
    let subject = format!("{}#{}", provider.issuer, claims.sub);
    Ok(Verified::Subject { subject, claims })
}

// === Discovery and keys ===

/// Values fetched from a URL, and when.
type Cache<T> = LazyLock<Mutex<HashMap<String, (T, Instant)>>>;

/// Discovery documents by issuer. Public documents, so one cache serves every `Core`.
static PROVIDERS: Cache<AuthServer> = LazyLock::new(Default::default);
/// Key sets by `jwks_uri`.
static KEY_SETS: Cache<Vec<Jwk>> = LazyLock::new(Default::default);

/// OpenID Connect Discovery for `issuer` (cached an hour; failures are not cached).
async fn discover(core: &Core, issuer: &str) -> Result<AuthServer, SignInError> {
    if let Some((provider, at)) = PROVIDERS.lock().unwrap_or_else(PoisonError::into_inner).get(issuer)
        && at.elapsed() < CACHE_FOR
    {
        return Ok(provider.clone());
    }
    let outbound = upstream::outbound(core)?;
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let fetched = outbound
        .get(&url, "application/json", Some(64 * 1024))
        .await
        .map_err(|e| UpstreamError::Discovery(e.to_string()))?;
    if fetched.status != 200 {
        return Err(UpstreamError::Discovery(format!("{url} answered {}", fetched.status)).into());
    }
    let document: Value =
        serde_json::from_slice(&fetched.body).map_err(|_| UpstreamError::Discovery(format!("{url} did not answer JSON")))?;
    let provider = AuthServer::from_metadata(&outbound, &document, issuer)?;
    // Security: OpenID Connect Discovery §3, the ID token's `iss` must equal
    // the configured issuer exactly, so the document's issuer must too.
    if provider.issuer != issuer {
        return Err(
            UpstreamError::Discovery(format!("discovery names issuer {:?}, configured {issuer:?}", provider.issuer)).into(),
        );
    }
    if provider.jwks_uri.is_empty() {
        return Err(UpstreamError::Discovery("the provider publishes no jwks_uri".into()).into());
    }
    if !provider.id_token_signing_alg_values_supported.is_empty()
        && !provider
            .id_token_signing_alg_values_supported
            .iter()
            .any(|a| a == "RS256" || a == "ES256")
    {
        return Err(UpstreamError::Discovery("the provider signs ID tokens with neither RS256 nor ES256".into()).into());
    }
    PROVIDERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(issuer.to_string(), (provider.clone(), Instant::now()));
    Ok(provider)
}

async fn fetch_keys(core: &Core, jwks_uri: &str) -> Result<Vec<Jwk>, SignInError> {
    let outbound = upstream::outbound(core)?;
    let fetched = outbound
        .get(jwks_uri, "application/json", Some(64 * 1024))
        .await
        .map_err(|e| UpstreamError::Discovery(e.to_string()))?;
    if fetched.status != 200 {
        return Err(UpstreamError::Discovery(format!("{jwks_uri} answered {}", fetched.status)).into());
    }
    let set: JwkSet =
        serde_json::from_slice(&fetched.body).map_err(|_| UpstreamError::Discovery(format!("{jwks_uri} is not a JWK set")))?;
    KEY_SETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(jwks_uri.to_string(), (set.keys.clone(), Instant::now()));
    Ok(set.keys)
}

/// Verifies with the cached key set; on an unknown key fetches the set once
/// more (the provider may have rotated) and tries again.
async fn verify_with_provider_keys(
    core: &Core,
    provider: &AuthServer,
    token: &str,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, SignInError> {
    let cached = KEY_SETS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&provider.jwks_uri)
        .filter(|(_, at)| at.elapsed() < CACHE_FOR)
        .map(|(keys, _)| keys.clone());
    let (keys, fresh) = match cached {
        Some(keys) => (keys, false),
        None => (fetch_keys(core, &provider.jwks_uri).await?, true),
    };
    match verify_id_token(token, &keys, expected) {
        Err(IdTokenError::UnknownKey) if !fresh => {
            let keys = fetch_keys(core, &provider.jwks_uri).await?;
            Ok(verify_id_token(token, &keys, expected)?)
        }
        other => Ok(other?),
    }
}

// === ID token verification ===

/// One JSON Web Key (RFC 7517), as far as RS256 and ES256 need it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the token response has no id_token")]
    Missing,
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted (RS256 or ES256 only)")]
    Algorithm(String),
    #[error("no key in the provider's key set matches")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("issued by another issuer")]
    Issuer,
    #[error("issued to another client")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("issued at an implausible time")]
    IssuedAt,
    #[error("the nonce does not match this sign-in")]
    Nonce,
    #[error("no subject")]
    Subject,
}

/// What the ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// SHA-256 hex of the nonce sent in the authorization request.
    pub nonce_hash: &'a str,
    /// Unix seconds now.
    pub now: i64,
}

/// The claims Gatehouse uses from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub preferred_username: Option<String>,
}

impl IdTokenClaims {
    /// A verified e-mail (unless the provider says it is unverified), else the
    /// preferred username, else the subject.
    pub fn display_name(&self) -> String {
        let email = self.email.as_ref().filter(|_| self.email_verified != Some(false));
        email
            .or(self.preferred_username.as_ref())
            .map(|v| upstream::printable(v))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| upstream::printable(&self.sub))
    }
}

/// Verifies a compact JWS ID token (OpenID Connect Core §3.1.3.7) against `keys`.
pub fn verify_id_token(token: &str, keys: &[Jwk], expected: &Expected<'_>) -> Result<IdTokenClaims, IdTokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed("not a compact JWS"));
    };
    let header: Value = decode_json(header_b64)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    // Security: RFC 8725 §3.1, the algorithm is ours to choose, not the
    // token's: only RS256 and ES256; `none` and HMAC (which would make the
    // public key a shared secret) are refused.
    if alg != "RS256" && alg != "ES256" {
        return Err(IdTokenError::Algorithm(alg.chars().take(16).collect()));
    }
    // Security: RFC 7515 §4.1.11, an extension we do not understand must not be ignored.
    if header.get("crit").is_some() {
        return Err(IdTokenError::Malformed("crit header parameters are not supported"));
    }
    // Security: keys come only from the configured provider's JWKS; `jku`,
    // `jwk` and `x5u` in the header are never followed.
    let kid = header.get("kid").and_then(Value::as_str);
    let key = select_key(keys, alg, kid)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| IdTokenError::Malformed("signature is not base64url"))?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    verify_signature(key, alg, signed, &signature)?;

    // By this point the token is the provider's own; now what it says.
    let claims: Value = decode_json(payload_b64)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(expected.issuer) {
        return Err(IdTokenError::Issuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(IdTokenError::Audience);
    }
    // OpenID Connect Core §3.1.3.7 items 4-5: with several audiences the
    // authorized party must be us; when stated, it must be us anyway.
    match text("azp") {
        Some(azp) if azp != expected.client_id => return Err(IdTokenError::Audience),
        None if audiences.len() > 1 => return Err(IdTokenError::Audience),
        _ => {}
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = number("exp").ok_or(IdTokenError::Malformed("no exp"))?;
    if exp + SKEW <= expected.now {
        return Err(IdTokenError::Expired);
    }
    let iat = number("iat").ok_or(IdTokenError::Malformed("no iat"))?;
    if iat > expected.now + SKEW || iat < expected.now - MAX_AGE - SKEW || exp < iat {
        return Err(IdTokenError::IssuedAt);
    }
    // Security: the nonce ties the token to this sign-in attempt (replay of a
    // token from another attempt fails); compared as hashes, in constant time.
    let nonce = text("nonce").ok_or(IdTokenError::Nonce)?;
    if expected.nonce_hash.is_empty() || !secret::constant_time_eq(secret::hash(nonce).as_bytes(), expected.nonce_hash.as_bytes())
    {
        return Err(IdTokenError::Nonce);
    }
    let sub = text("sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(IdTokenError::Subject)?;
    Ok(IdTokenClaims {
        sub: sub.to_string(),
        email: text("email").map(str::to_string),
        email_verified: claims.get("email_verified").and_then(Value::as_bool),
        preferred_username: text("preferred_username").map(str::to_string),
    })
}

fn decode_json(part: &str) -> Result<Value, IdTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdTokenError::Malformed("a part is not base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(IdTokenError::Malformed("a part is not a JSON object")),
    }
}

/// The key for `alg` named by `kid`; without a `kid`, the only key that fits.
fn select_key<'a>(keys: &'a [Jwk], alg: &str, kid: Option<&str>) -> Result<&'a Jwk, IdTokenError> {
    let fits = |k: &&Jwk| {
        let kty_ok = match alg {
            "RS256" => k.kty == "RSA",
            _ => k.kty == "EC" && k.crv.as_deref() == Some("P-256"),
        };
        kty_ok
            && k.use_.as_deref().is_none_or(|u| u == "sig")
            && k.alg.as_deref().is_none_or(|a| a == alg)
            && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
    };
    let mut candidates = keys.iter().filter(fits);
    match (candidates.next(), candidates.next()) {
        (Some(key), None) => Ok(key),
        // Several keys with the same kid (or none named) is ambiguous: refuse.
        _ => Err(IdTokenError::UnknownKey),
    }
}

fn verify_signature(key: &Jwk, alg: &str, signed: &[u8], signature: &[u8]) -> Result<(), IdTokenError> {
    let b64 = |v: &Option<String>| -> Result<Vec<u8>, IdTokenError> {
        URL_SAFE_NO_PAD
            .decode(v.as_deref().unwrap_or_default())
            .map_err(|_| IdTokenError::Malformed("key material is not base64url"))
    };
    let verified = match alg {
        "RS256" => {
            let n = b64(&key.n)?;
            let e = b64(&key.e)?;
            sig::RsaPublicKeyComponents { n: &n, e: &e }.verify(&sig::RSA_PKCS1_2048_8192_SHA256, signed, signature)
        }
        _ => {
            let (x, y) = (b64(&key.x)?, b64(&key.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(IdTokenError::Malformed("P-256 coordinates must be 32 bytes"));
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &point).verify(signed, signature)
        }
    };
    verified.map_err(|_| IdTokenError::BadSignature)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

    use super::*;

    const ISSUER: &str = "https://idp.example";
    const CLIENT: &str = "gatehouse";
    const NOW: i64 = 1_800_000_000;

    struct Es256 {
        pair: EcdsaKeyPair,
        jwk: Jwk,
    }

    fn es256(kid: &str) -> Es256 {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some(kid.into()),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
            ..Default::default()
        };
        Es256 { pair, jwk }
    }

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn sign_es256(key: &Es256, header: Value, claims: Value) -> String {
        let input = format!("{}.{}", encode(&header), encode(&claims));
        let signature = key.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn claims(nonce: &str) -> Value {
        json!({
            "iss": ISSUER, "sub": "alice", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 5,
            "nonce": nonce, "email": "alice@example.com"
        })
    }

    fn expected(nonce_hash: &str) -> Expected<'_> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce_hash,
            now: NOW,
        }
    }

    #[test]
    fn a_well_signed_es256_token_verifies() {
        let key = es256("k1");
        let nonce_hash = secret::hash("n-1");
        let token = sign_es256(&key, json!({"alg": "ES256", "kid": "k1"}), claims("n-1"));
        let verified = verify_id_token(&token, std::slice::from_ref(&key.jwk), &expected(&nonce_hash)).unwrap();
        assert_eq!(verified.sub, "alice");
        assert_eq!(verified.display_name(), "alice@example.com");
    }

    #[test]
    fn a_well_signed_rs256_token_verifies() {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let components: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public_key().into();
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: Some("r1".into()),
            n: Some(URL_SAFE_NO_PAD.encode(&components.n)),
            e: Some(URL_SAFE_NO_PAD.encode(&components.e)),
            ..Default::default()
        };
        let input = format!("{}.{}", encode(&json!({"alg": "RS256", "kid": "r1"})), encode(&claims("n")));
        let mut signature = vec![0u8; pair.public_modulus_len()];
        pair.sign(&sig::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature)
            .unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));
        let nonce_hash = secret::hash("n");
        assert_eq!(
            verify_id_token(&token, std::slice::from_ref(&jwk), &expected(&nonce_hash))
                .unwrap()
                .sub,
            "alice"
        );
        // Flip one character well inside the signature (the last one carries padding bits).
        let mut tampered = token.clone().into_bytes();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            verify_id_token(&tampered, &[jwk], &expected(&nonce_hash)),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = es256("k1");
        let nonce_hash = secret::hash("n");
        let token = sign_es256(&key, json!({"alg": "ES256", "kid": "k1"}), claims("n"));
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims("n");
        forged["sub"] = json!("mallory");
        let tampered = format!("{}.{}.{}", parts[0], encode(&forged), parts[2]);
        assert_eq!(
            verify_id_token(&tampered, &[key.jwk], &expected(&nonce_hash)),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let ours = es256("k1");
        let theirs = es256("k1");
        let nonce_hash = secret::hash("n");
        let token = sign_es256(&theirs, json!({"alg": "ES256", "kid": "k1"}), claims("n"));
        assert_eq!(
            verify_id_token(&token, &[ours.jwk], &expected(&nonce_hash)),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let key = es256("k1");
        let nonce_hash = secret::hash("n");
        for alg in ["none", "HS256", "RS512", "ES384"] {
            let unsigned = format!("{}.{}.", encode(&json!({"alg": alg, "kid": "k1"})), encode(&claims("n")));
            assert_eq!(
                verify_id_token(&unsigned, std::slice::from_ref(&key.jwk), &expected(&nonce_hash)),
                Err(IdTokenError::Algorithm(alg.into())),
                "{alg}"
            );
        }
    }

    #[test]
    fn wrong_nonce_audience_issuer_and_times_are_refused() {
        let key = es256("k1");
        let keys = std::slice::from_ref(&key.jwk);
        let header = json!({"alg": "ES256", "kid": "k1"});
        let nonce_hash = secret::hash("n");
        let check = |claims: Value| verify_id_token(&sign_es256(&key, header.clone(), claims), keys, &expected(&nonce_hash));

        assert_eq!(check(claims("other")), Err(IdTokenError::Nonce));
        let mut no_nonce = claims("n");
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(no_nonce), Err(IdTokenError::Nonce));

        let mut aud = claims("n");
        aud["aud"] = json!("someone-else");
        assert_eq!(check(aud), Err(IdTokenError::Audience));
        let mut several = claims("n");
        several["aud"] = json!([CLIENT, "other"]);
        assert_eq!(check(several.clone()), Err(IdTokenError::Audience));
        several["azp"] = json!(CLIENT);
        assert!(check(several).is_ok());

        let mut iss = claims("n");
        iss["iss"] = json!("https://evil.example");
        assert_eq!(check(iss), Err(IdTokenError::Issuer));

        let mut expired = claims("n");
        expired["exp"] = json!(NOW - SKEW - 1);
        assert_eq!(check(expired), Err(IdTokenError::Expired));
        let mut future = claims("n");
        future["iat"] = json!(NOW + SKEW + 10);
        assert_eq!(check(future), Err(IdTokenError::IssuedAt));
        let mut old = claims("n");
        old["iat"] = json!(NOW - MAX_AGE - SKEW - 1);
        assert_eq!(check(old), Err(IdTokenError::IssuedAt));
    }

    #[test]
    fn keys_are_chosen_by_kid_and_type() {
        let a = es256("a");
        let b = es256("b");
        let nonce_hash = secret::hash("n");
        let keys = [a.jwk.clone(), b.jwk.clone()];
        let token = sign_es256(&b, json!({"alg": "ES256", "kid": "b"}), claims("n"));
        assert!(verify_id_token(&token, &keys, &expected(&nonce_hash)).is_ok());
        let unknown = sign_es256(&b, json!({"alg": "ES256", "kid": "c"}), claims("n"));
        assert_eq!(
            verify_id_token(&unknown, &keys, &expected(&nonce_hash)),
            Err(IdTokenError::UnknownKey)
        );
        // No kid: fine with one key, ambiguous with two.
        let no_kid = sign_es256(&b, json!({"alg": "ES256"}), claims("n"));
        assert!(verify_id_token(&no_kid, std::slice::from_ref(&b.jwk), &expected(&nonce_hash)).is_ok());
        assert_eq!(
            verify_id_token(&no_kid, &keys, &expected(&nonce_hash)),
            Err(IdTokenError::UnknownKey)
        );
        // An RSA-typed key never verifies an ES256 token.
        let mut rsa_typed = b.jwk.clone();
        rsa_typed.kty = "RSA".into();
        assert_eq!(
            verify_id_token(&token, &[rsa_typed], &expected(&nonce_hash)),
            Err(IdTokenError::UnknownKey)
        );
    }

    #[test]
    fn config_defaults_and_refuses_unknown_keys() {
        let config: SignInConfig = serde_json::from_value(json!({"issuer": ISSUER, "client_id": CLIENT})).unwrap();
        assert_eq!(config.scopes, ["openid", "email", "profile"]);
        assert_eq!(config.display_name, "Sign in");
        assert!(config.client_secret_env.is_empty() && config.client_secret_file.is_empty());
        assert!(serde_json::from_value::<SignInConfig>(json!({"issuer": ISSUER, "client_id": CLIENT, "secret": "x"})).is_err());
    }

    #[test]
    fn display_name_prefers_a_verified_email() {
        let mut claims = IdTokenClaims {
            sub: "s".into(),
            email: Some("a@x".into()),
            email_verified: None,
            preferred_username: Some("al".into()),
        };
        assert_eq!(claims.display_name(), "a@x");
        claims.email_verified = Some(false);
        assert_eq!(claims.display_name(), "al");
        claims.preferred_username = None;
        assert_eq!(claims.display_name(), "s");
    }
}
