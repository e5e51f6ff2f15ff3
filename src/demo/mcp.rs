//! The demo MCP server at `/mcp`: Streamable HTTP, JSON-RPC 2.0, JSON responses only, no
//! sessions, protected by the demo provider's access tokens. Tools: `whoami`, `echo`, `add`.
//!
//! Every request is recorded (headers and body) before anything else, so tests can see exactly
//! what a gateway sent.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::oauth::{Bearer, bearer};
use super::{DemoStats, PROTOCOL_VERSIONS, RecordedRequest, Shared, has_content_type};

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    record(&shared, &method, &headers, &body);

    // DNS-rebinding defence required by the transport spec: browsers send Origin.
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.as_bytes() != shared.base_url.as_bytes()
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }

    let account = match bearer(&headers) {
        Bearer::Missing => return unauthorized(&shared, false),
        Bearer::Malformed => return unauthorized(&shared, true),
        Bearer::Token(_) if shared.store().refuse_mcp_tokens => return unauthorized(&shared, true),
        Bearer::Token(token) => {
            let info = shared.store().validate_access_token(token);
            // The token must be for this resource (RFC 8707 audience), when it names one.
            match info.filter(|i| i.resource.as_ref().is_none_or(|r| *r == shared.mcp_url())) {
                Some(info) => info.account,
                None => return unauthorized(&shared, true),
            }
        }
    };

    if method != Method::POST {
        // No SSE stream to open with GET and no session to end with DELETE.
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, HeaderValue::from_static("POST"))],
        )
            .into_response();
    }
    if !has_content_type(&headers, "application/json") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json").into_response();
    }
    if !accepts_both(&headers) {
        return rpc_failure(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            INVALID_REQUEST,
            "Accept must list application/json and text/event-stream",
        );
    }

    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => {
            return rpc_failure(StatusCode::BAD_REQUEST, Value::Null, PARSE_ERROR, "Parse error");
        }
    };
    let Value::Object(message) = message else {
        let text = if message.is_array() {
            "Invalid Request: batches are not supported"
        } else {
            "Invalid Request: not a JSON-RPC object"
        };
        return rpc_failure(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, text);
    };
    let id = message.get("id").cloned();
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_failure(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        );
    }
    let Some(rpc_method) = message.get("method") else {
        if message.contains_key("result") || message.contains_key("error") {
            // A response to a request we never sent; acknowledged and ignored.
            return StatusCode::ACCEPTED.into_response();
        }
        return rpc_failure(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "Invalid Request: no method",
        );
    };
    let Some(rpc_method) = rpc_method.as_str() else {
        return rpc_failure(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "Invalid Request: method must be a string",
        );
    };
    // A 2026-07-28 client probes with server/discover; a server that speaks only the older
    // revisions answers a bare 400 so the client falls back to initialize.
    if rpc_method == "server/discover" {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Some(id) = id else {
        // Notifications get no answer.
        return StatusCode::ACCEPTED.into_response();
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return rpc_failure(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: id must be a string or an integer",
        );
    }
    if rpc_method != "initialize"
        && let Some(version) = headers.get("mcp-protocol-version")
        && !PROTOCOL_VERSIONS.iter().any(|v| v.as_bytes() == version.as_bytes())
    {
        return rpc_failure(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            "Unsupported MCP-Protocol-Version",
        );
    }

    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let outcome = match rpc_method {
        "initialize" => Ok(initialize(&shared, &params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools() })),
        "tools/call" => call_tool(&account, &params),
        _ => Err((METHOD_NOT_FOUND, format!("Method not found: {rpc_method}"))),
    };
    let body = match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
        }
    };
    Json(body).into_response()
}

fn record(shared: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) {
    DemoStats::bump(&shared.stats.mcp_requests);
    let request = RecordedRequest {
        method: method.to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    shared
        .stats
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(request);
}

/// 401 pointing at the protected-resource metadata (RFC 9728 §5.1), with `invalid_token` when
/// a token was sent but is not good (RFC 6750 §3.1).
fn unauthorized(shared: &Shared, token_sent: bool) -> Response {
    let mut challenge = format!("Bearer resource_metadata=\"{}\"", shared.resource_metadata_url());
    if token_sent {
        challenge.push_str(", error=\"invalid_token\"");
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": if token_sent { "invalid_token" } else { "unauthorized" } })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Streamable HTTP: a client lists both JSON and SSE in Accept (wildcards count).
fn accepts_both(headers: &HeaderMap) -> bool {
    let ranges: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|r| r.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .collect();
    let accepts = |full: &str, family: &str| ranges.iter().any(|r| r == full || r == family || r == "*/*");
    accepts("application/json", "application/*") && accepts("text/event-stream", "text/*")
}

fn rpc_failure(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn initialize(shared: &Shared, params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.len() - 1]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": {} },
        "serverInfo": {
            "name": "gatehouse-demo",
            "title": shared.config.name,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "A demo server: whoami tells which account authorized this connection.",
    })
}

fn tools() -> Value {
    json!([
        {
            "name": "whoami",
            "title": "Who am I",
            "description": "Tells which account authorized this connection.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "openWorldHint": false },
        },
        {
            "name": "echo",
            "title": "Echo",
            "description": "Returns the text it is given.",
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to return" } },
                "required": ["text"],
                "additionalProperties": false,
            },
            "annotations": { "readOnlyHint": true, "openWorldHint": false },
        },
        {
            "name": "add",
            "title": "Add",
            "description": "Adds two numbers.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "a": { "type": "number", "description": "First addend" },
                    "b": { "type": "number", "description": "Second addend" },
                },
                "required": ["a", "b"],
                "additionalProperties": false,
            },
            "annotations": { "readOnlyHint": true, "openWorldHint": false },
        },
    ])
}

/// `tools/call`: protocol errors for an unknown tool or malformed params, tool errors
/// (`isError`) for bad arguments, as the MCP spec separates them.
fn call_tool(account: &str, params: &Value) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((INVALID_PARAMS, "Invalid params: name is required".to_owned()));
    };
    let empty = serde_json::Map::new();
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(arguments)) => arguments,
        Some(_) => {
            return Err((INVALID_PARAMS, "Invalid params: arguments must be an object".to_owned()));
        }
    };
    let outcome = match name {
        "whoami" => Ok(format!("you are {account}")),
        "echo" => match arguments.get("text") {
            Some(Value::String(text)) => Ok(text.clone()),
            _ => Err("echo needs a string argument \"text\"".to_owned()),
        },
        "add" => match (arguments.get("a"), arguments.get("b")) {
            (Some(Value::Number(a)), Some(Value::Number(b))) => Ok(add(a, b)),
            _ => Err("add needs numeric arguments \"a\" and \"b\"".to_owned()),
        },
        _ => return Err((INVALID_PARAMS, format!("Unknown tool: {name}"))),
    };
    let (text, is_error) = match outcome {
        Ok(text) => (text, false),
        Err(text) => (text, true),
    };
    Ok(json!({ "content": [{ "type": "text", "text": text }], "isError": is_error }))
}

/// Integers add exactly; anything else as f64 (whose Display prints 5 for 5.0).
fn add(a: &serde_json::Number, b: &serde_json::Number) -> String {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return sum.to_string();
    }
    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
    sum.to_string()
}
