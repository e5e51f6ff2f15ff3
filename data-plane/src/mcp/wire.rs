//! The Streamable HTTP checks of `/mcp` that come before dispatch: `Origin`,
//! `Content-Type`, `MCP-Protocol-Version`, and on the 2026-07-28 wire the
//! per-request `_meta` with the `Mcp-Method` and `Mcp-Name` headers that must
//! mirror the body (SPEC-NOTES §4.1, §4.2, §4.4 T2, T13, T15).

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::McpError;

/// The revision assumed when a request names none (SPEC-NOTES §4.1).
pub(crate) const DEFAULT_VERSION: &str = "2025-03-26";
/// Legacy revisions (initialize handshake), oldest first.
pub(crate) const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The legacy revision offered when a client asks for one Gatehouse does not speak.
pub(crate) const LATEST_LEGACY: &str = "2025-11-25";
/// Modern revisions (per-request `_meta`).
pub(crate) const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// Every revision served, oldest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// `_meta` keys of the 2026-07-28 wire.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// What a 2026-07-28 request declared about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Modern {
    pub(crate) version: String,
    /// `_meta` holds `clientCapabilities` (required on every request).
    pub(crate) declared_capabilities: bool,
    /// The capabilities declared (`sampling`, `elicitation`, `roots`, …).
    pub(crate) capabilities: Vec<String>,
    /// `clientCapabilities.elicitation.url` was declared on this request.
    pub(crate) url_elicitation: bool,
    /// `_meta` asks for log messages (`io.modelcontextprotocol/logLevel`).
    pub(crate) log_level: bool,
}

/// Methods whose 2026-07-28 results may be cached: they carry `ttlMs` and `cacheScope`.
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];
/// Methods the 2026-07-28 revision removed (404, -32601 there).
pub(crate) const REMOVED_IN_MODERN: [&str; 2] = ["ping", "logging/setLevel"];
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Security: MCP Streamable HTTP (DNS rebinding), SPEC-NOTES §4.1 T2: a
/// browser's request from an origin other than Gatehouse's own (or an
/// allow-listed one) is refused with 403. Native clients send no `Origin`.
pub(crate) fn check_origin(headers: &HeaderMap, public_url: &str, allowed: &[String]) -> Result<(), McpError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| McpError::ForbiddenOrigin)?;
    let normalized = origin_of(origin).ok_or(McpError::ForbiddenOrigin)?;
    let ours = origin_of(public_url);
    if ours.as_deref() == Some(normalized.as_str())
        || allowed.iter().any(|a| origin_of(a).as_deref() == Some(normalized.as_str()))
    {
        Ok(())
    } else {
        Err(McpError::ForbiddenOrigin)
    }
}

/// The ASCII serialisation of a URL's origin; `None` for opaque origins ("null").
fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// A POST body must be JSON.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), McpError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(McpError::UnsupportedMediaType)
    }
}

/// The `MCP-Protocol-Version` header: absent → 2025-03-26; a revision
/// Gatehouse does not speak → 400 (SPEC-NOTES §4.1 T13).
pub(crate) fn header_version(headers: &HeaderMap) -> Result<String, McpError> {
    let Some(value) = headers.get("mcp-protocol-version") else {
        return Ok(DEFAULT_VERSION.to_owned());
    };
    let value = value.to_str().unwrap_or("").trim();
    if SUPPORTED_VERSIONS.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(McpError::UnsupportedVersion {
            requested: value.chars().filter(|c| c.is_ascii_graphic()).take(64).collect(),
        })
    }
}

/// The 2026-07-28 `_meta` of a request's params, if it has one. Only params
/// that mention the key are parsed.
pub(crate) fn modern_meta(params: Option<&RawValue>) -> Option<Modern> {
    let params = params?;
    if !params.get().contains(META_VERSION) {
        return None;
    }
    let value: Value = serde_json::from_str(params.get()).ok()?;
    let meta = value.get("_meta")?;
    let version = meta.get(META_VERSION)?.as_str()?.to_owned();
    let capabilities = meta.get(META_CAPABILITIES);
    let url_elicitation = capabilities
        .and_then(|c| c.get("elicitation"))
        .and_then(|e| e.get("url"))
        .is_some_and(Value::is_object);
    Some(Modern {
        version,
        declared_capabilities: capabilities.is_some_and(Value::is_object),
        capabilities: capabilities
            .and_then(Value::as_object)
            .map(|declared| declared.keys().cloned().collect())
            .unwrap_or_default(),
        url_elicitation,
        log_level: meta.get(META_LOG_LEVEL).is_some_and(Value::is_string),
    })
}

/// A 2026-07-28 result as that revision wants it, from a reply an upstream of
/// an older revision (or Gatehouse itself) wrote: `resultType` (`complete`
/// unless it says otherwise) and, for cacheable methods, `ttlMs` and
/// `cacheScope`. Gatehouse's lists are per person and change when a service
/// is connected, so they are `private` and not to be reused (`0`). Only the
/// result's top-level keys are read; the bytes are spliced, not re-serialised.
/// `None` when the reply has no result object (an error) or needs nothing.
pub(crate) fn complete_result(method: &str, response: &[u8]) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        result: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_slice(response).ok()?;
    let result = envelope.result?;
    let keys: std::collections::HashMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny> =
        serde_json::from_str(result.get()).ok()?;
    let mut added = String::new();
    if !keys.contains_key("resultType") {
        added.push_str(r#""resultType":"complete","#);
    }
    if CACHEABLE.contains(&method) {
        if !keys.contains_key("ttlMs") {
            added.push_str(r#""ttlMs":0,"#);
        }
        if !keys.contains_key("cacheScope") {
            added.push_str(r#""cacheScope":"private","#);
        }
    }
    if added.is_empty() {
        return None;
    }
    if keys.is_empty() {
        added.pop();
    }
    // The result borrows from `response`: its offset, then just past its `{`.
    let start = result.get().as_ptr() as usize - response.as_ptr() as usize;
    let brace = start + result.get().find('{')? + 1;
    let mut out = Vec::with_capacity(response.len() + added.len());
    out.extend_from_slice(&response[..brace]);
    out.extend_from_slice(added.as_bytes());
    out.extend_from_slice(&response[brace..]);
    Some(out)
}

/// Validates a 2026-07-28 request: its revision, and that `MCP-Protocol-Version`,
/// `Mcp-Method` and (for calls naming one thing) `Mcp-Name` mirror the body.
pub(crate) fn check_modern(
    headers: &HeaderMap,
    id: &str,
    method: &str,
    params: Option<&RawValue>,
    modern: &Modern,
) -> Result<(), McpError> {
    let mismatch = |detail: &str| McpError::HeaderMismatch {
        id: id.to_owned(),
        detail: detail.to_owned(),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(decode_header_value);
    if header("mcp-protocol-version").flatten().as_deref() != Some(modern.version.as_str()) {
        return Err(mismatch(
            "MCP-Protocol-Version must equal _meta io.modelcontextprotocol/protocolVersion",
        ));
    }
    if !MODERN_VERSIONS.contains(&modern.version.as_str()) {
        return Err(McpError::UnsupportedModernVersion {
            id: id.to_owned(),
            requested: modern.version.clone(),
        });
    }
    // What this revision requires of `_meta` (a later one may require otherwise).
    if !modern.declared_capabilities {
        return Err(McpError::InvalidMeta {
            id: id.to_owned(),
            missing: META_CAPABILITIES,
        });
    }
    if header("mcp-method").flatten().as_deref() != Some(method) {
        return Err(mismatch("Mcp-Method must equal the method"));
    }
    let named = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = named {
        let value: Option<Value> = params.and_then(|p| serde_json::from_str(p.get()).ok());
        let expected = value.as_ref().and_then(|v| v.get(field)).and_then(Value::as_str);
        let sent = header("mcp-name").flatten();
        if expected.is_none() || sent.as_deref() != expected {
            return Err(mismatch("Mcp-Name must equal params.name (params.uri for resources/read)"));
        }
    }
    Ok(())
}

/// A header value, decoded from `=?base64?…?=` when so encoded; `None` when
/// the encoding is broken.
fn decode_header_value(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|rest| rest.strip_suffix("?=")) {
        Some(encoded) => STANDARD.decode(encoded).ok().and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_owned()),
    }
}

/// A request without the 2026-07-28 `_meta` while `MCP-Protocol-Version`
/// names that revision: 400 with -32602 (the `_meta` is what is invalid; the
/// header itself is fine).
pub(crate) fn missing_meta(id: &str) -> McpError {
    McpError::InvalidMeta {
        id: id.to_owned(),
        missing: META_VERSION,
    }
}

/// The revision answered to a legacy `initialize`: the client's when
/// Gatehouse speaks it, else the latest legacy one.
pub(crate) fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| LEGACY_VERSIONS.iter().find(|v| **v == r))
        .copied()
        .unwrap_or(LATEST_LEGACY)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn completed(method: &str, response: &str) -> Option<Value> {
        complete_result(method, response.as_bytes()).map(|out| serde_json::from_slice(&out).expect("still JSON"))
    }

    #[test]
    fn modern_results_get_their_type_and_lists_their_cache_hints() {
        let call = completed(
            "tools/call",
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"{\"a\":1}"}]}}"#,
        )
        .unwrap();
        assert_eq!(call["result"]["resultType"], "complete");
        assert_eq!(call["result"]["content"][0]["text"], r#"{"a":1}"#, "the rest is untouched");
        assert!(call["result"].get("ttlMs").is_none(), "a call result is not cacheable");
        assert_eq!(call["id"], 7);

        let list = completed("tools/list", r#"{"jsonrpc":"2.0","id":"x","result":{}}"#).unwrap();
        assert_eq!(
            list["result"],
            serde_json::json!({"resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );

        // What the upstream said stays; an error or a result already complete is left alone.
        let own = completed(
            "resources/read",
            r#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":5000,"contents":[]}}"#,
        )
        .unwrap();
        assert_eq!(own["result"]["ttlMs"], 5000);
        assert_eq!(own["result"]["cacheScope"], "private");
        let input = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"s"}}"#;
        assert_eq!(complete_result("tools/call", input.as_bytes()), None);
        let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#;
        assert_eq!(complete_result("tools/call", error.as_bytes()), None);
    }

    #[test]
    fn a_modern_request_must_declare_its_capabilities() {
        let params =
            RawValue::from_string(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"name":"t"}"#.to_owned())
                .unwrap();
        let modern = modern_meta(Some(&params)).unwrap();
        assert!(!modern.declared_capabilities);
        let headers = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "t"),
        ]);
        let refused = check_modern(&headers, "1", "tools/call", Some(&params), &modern).unwrap_err();
        assert!(matches!(refused, McpError::InvalidMeta { .. }), "{refused:?}");
    }

    #[test]
    fn origins_are_ours_or_allow_listed() {
        let public = "https://gw.example.com";
        let allowed = vec!["https://app.example.com/".to_owned()];
        assert!(
            check_origin(&headers(&[]), public, &allowed).is_ok(),
            "native clients send none"
        );
        for ok in [
            "https://gw.example.com",
            "HTTPS://GW.example.com:443",
            "https://app.example.com",
        ] {
            assert!(check_origin(&headers(&[("origin", ok)]), public, &allowed).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example.com",
            "null",
            "http://gw.example.com",
            "https://gw.example.com:8443",
        ] {
            assert_eq!(
                check_origin(&headers(&[("origin", bad)]), public, &allowed),
                Err(McpError::ForbiddenOrigin),
                "{bad}"
            );
        }
    }

    #[test]
    fn protocol_version_headers() {
        assert_eq!(header_version(&headers(&[])).unwrap(), "2025-03-26");
        for version in SUPPORTED_VERSIONS {
            assert_eq!(
                header_version(&headers(&[("mcp-protocol-version", version)])).unwrap(),
                version
            );
        }
        assert!(matches!(
            header_version(&headers(&[("mcp-protocol-version", "2024-11-05")])),
            Err(McpError::UnsupportedVersion { .. })
        ));
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2024-11-05")), "2025-11-25");
        assert_eq!(negotiate(Some("2026-07-28")), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(check_content_type(&headers(&[("content-type", "application/json; charset=utf-8")])).is_ok());
        assert!(check_content_type(&headers(&[("content-type", "text/plain")])).is_err());
        assert!(check_content_type(&headers(&[])).is_err());
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn modern_requests_are_recognised_by_their_meta() {
        let params = raw(
            r#"{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}"#,
        );
        let modern = modern_meta(Some(&params)).unwrap();
        assert_eq!(modern.version, "2026-07-28");
        assert!(modern.url_elicitation);
        assert!(modern_meta(Some(&raw(r#"{"name":"x"}"#))).is_none());
        assert!(modern_meta(None).is_none());
    }

    #[test]
    fn modern_headers_must_mirror_the_body() {
        let params = raw(
            r#"{"name":"notes__search","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#,
        );
        let modern = modern_meta(Some(&params)).unwrap();
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "notes__search"),
        ];
        assert!(check_modern(&headers(&good), "1", "tools/call", Some(&params), &modern).is_ok());
        let encoded = format!("=?base64?{}?=", STANDARD.encode("notes__search"));
        let with_encoded = [good[0], good[1], ("mcp-name", encoded.as_str())];
        assert!(check_modern(&headers(&with_encoded), "1", "tools/call", Some(&params), &modern).is_ok());
        for (case, bad) in [
            ("method", [good[0], ("mcp-method", "tools/list"), good[2]]),
            ("name", [good[0], good[1], ("mcp-name", "notes__other")]),
            ("version", [("mcp-protocol-version", "2025-11-25"), good[1], good[2]]),
        ] {
            assert!(
                matches!(
                    check_modern(&headers(&bad), "1", "tools/call", Some(&params), &modern),
                    Err(McpError::HeaderMismatch { .. })
                ),
                "{case}"
            );
        }
        let future = raw(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}"#);
        let modern = modern_meta(Some(&future)).unwrap();
        let headers = headers(&[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "tools/list")]);
        assert!(matches!(
            check_modern(&headers, "1", "tools/list", Some(&future), &modern),
            Err(McpError::UnsupportedModernVersion { .. })
        ));
    }
}
