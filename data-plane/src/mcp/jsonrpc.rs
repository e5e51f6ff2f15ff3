//! The little of JSON-RPC 2.0 the gateway reads: one message's kind, id,
//! method and the raw params. Everything else passes through as bytes.

use serde::Deserialize;
use serde_json::value::RawValue;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2025-11-25 `URLElicitationRequiredError`.
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// MCP 2026-07-28 `HeaderMismatch`.
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28 `UnsupportedProtocolVersion`.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// 2026-07-28: the request needs a client capability it did not declare.
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;

/// Whether a body is a batch (a JSON array), judged by its first character.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The elements of a batch, each still raw.
pub fn parse_batch(body: &[u8]) -> Result<Vec<&RawValue>, ParseError> {
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ParseError::NotJsonRpc
        } else {
            ParseError::NotJson
        }
    })?;
    if elements.is_empty() {
        return Err(ParseError::NotJsonRpc);
    }
    Ok(elements)
}

/// One incoming message, borrowing from the request body.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(default)]
    pub jsonrpc: Option<&'a str>,
    /// Present `null` stays `Some("null")` (and is refused), unlike a plain `Option`.
    #[serde(borrow, default, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(Some)
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// Why a body is not one valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON")]
    NotJson,
    #[error("a batch (JSON array) is not accepted")]
    Batch,
    #[error("not a JSON-RPC 2.0 message")]
    NotJsonRpc,
}

impl ParseError {
    /// The JSON-RPC error code for it.
    pub fn code(&self) -> i64 {
        match self {
            Self::NotJson => PARSE_ERROR,
            Self::Batch | Self::NotJsonRpc => INVALID_REQUEST,
        }
    }
}

impl<'a> Incoming<'a> {
    /// Parses one message.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        if is_batch(body) {
            return Err(ParseError::Batch);
        }
        let message: Incoming<'a> = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                ParseError::NotJsonRpc
            } else {
                ParseError::NotJson
            }
        })?;
        if message.jsonrpc != Some("2.0") {
            return Err(ParseError::NotJsonRpc);
        }
        // An id must be a string or a number (JSON-RPC 2.0 §4; MCP forbids null).
        if let Some(id) = message.id {
            let text = id.get();
            let is_string = text.starts_with('"');
            let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            if !is_string && !is_number {
                return Err(ParseError::NotJsonRpc);
            }
        }
        match (
            &message.method,
            message.id,
            message.result.is_some() || message.error.is_some(),
        ) {
            (Some(_), _, false) | (None, Some(_), true) => Ok(message),
            _ => Err(ParseError::NotJsonRpc),
        }
    }

    pub fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    /// The raw id as JSON text, `null` when absent.
    pub fn id_json(&self) -> &str {
        self.id.map(RawValue::get).unwrap_or("null")
    }
}

/// A JSON-RPC error response for `id` (raw JSON), as bytes.
pub fn error_response(id_json: &str, code: i64, message: &str, data: Option<&serde_json::Value>) -> Vec<u8> {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data.clone();
    }
    format!(r#"{{"jsonrpc":"2.0","id":{id_json},"error":{error}}}"#).into_bytes()
}

/// A JSON-RPC result response for `id` (raw JSON), as bytes.
pub fn result_response(id_json: &str, result: &serde_json::Value) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id_json},"result":{result}}}"#).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_refusals() {
        let request = Incoming::parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#).unwrap();
        assert_eq!((request.kind(), request.id_json()), (Kind::Request, "7"));
        assert_eq!(request.params.unwrap().get(), "{}");
        let note = Incoming::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(note.kind(), Kind::Notification);
        let response = Incoming::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(response.kind(), Kind::Response);
        for (case, body, err) in [
            ("not json", &b"{"[..], ParseError::NotJson),
            ("batch", &b" [{}]"[..], ParseError::Batch),
            ("no version", &br#"{"id":1,"method":"x"}"#[..], ParseError::NotJsonRpc),
            (
                "null id",
                &br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#[..],
                ParseError::NotJsonRpc,
            ),
            (
                "object id",
                &br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#[..],
                ParseError::NotJsonRpc,
            ),
            ("nothing", &br#"{"jsonrpc":"2.0"}"#[..], ParseError::NotJsonRpc),
            ("number", &b"3"[..], ParseError::NotJsonRpc),
        ] {
            assert_eq!(Incoming::parse(body).unwrap_err(), err, "{case}");
        }
    }

    #[test]
    fn batches_are_arrays_of_raw_messages() {
        assert!(is_batch(b" \n[1]"));
        assert!(!is_batch(b"{}"));
        let elements = parse_batch(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, {"a":1}]"#).unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(parse_batch(b"[]").unwrap_err(), ParseError::NotJsonRpc);
        assert_eq!(parse_batch(b"[").unwrap_err(), ParseError::NotJson);
    }

    #[test]
    fn responses_echo_the_raw_id() {
        let bytes = error_response(r#""abc""#, -32601, "Method not found", None);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["id"], "abc");
        assert_eq!(value["error"]["code"], -32601);
    }
}
