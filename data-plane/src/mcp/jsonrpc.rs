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

/// The fuzzing harness shared by the data plane's fuzz targets (SECURITY.md,
/// "Fuzzing"); it lives beside the corpus, in `fuzz/`.
#[cfg(test)]
#[path = "../../../fuzz/support.rs"]
pub(crate) mod fuzz;

/// Properties of the message parser over generated messages (SECURITY.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// A JSON value of some depth, of every JSON type.
    pub(super) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Messages with each member present or not, of the right type or another.
    pub(super) fn message() -> impl Strategy<Value = Value> {
        let member = |good: BoxedStrategy<Value>| prop::option::of(prop_oneof![3 => good, 1 => json_value()]);
        (
            member(prop_oneof![Just(json!("2.0")), Just(json!("1.0"))].boxed()),
            member(prop_oneof![any::<i64>().prop_map(Value::from), "[a-z0-9-]{0,8}".prop_map(Value::from)].boxed()),
            member("[a-z/_]{1,16}".prop_map(Value::from).boxed()),
            member(json_value().boxed()),
            member(json_value().boxed()),
            member(json_value().boxed()),
        )
            .prop_map(|(jsonrpc, id, method, params, result, error)| {
                let mut object = serde_json::Map::new();
                for (key, value) in [
                    ("jsonrpc", jsonrpc),
                    ("id", id),
                    ("method", method),
                    ("params", params),
                    ("result", result),
                    ("error", error),
                ] {
                    if let Some(value) = value {
                        object.insert(key.into(), value);
                    }
                }
                Value::Object(object)
            })
    }

    proptest! {
        #[test]
        fn well_formed_requests_parse_as_sent(
            id in prop_oneof![any::<i64>().prop_map(Value::from), "\\PC{0,12}".prop_map(Value::from)],
            method in "\\PC{1,20}",
            params in prop::option::of(json_value()),
        ) {
            let mut message = json!({ "jsonrpc": "2.0", "id": id, "method": method });
            if let Some(params) = &params {
                message["params"] = params.clone();
            }
            let body = serde_json::to_vec(&message).unwrap();
            let parsed = Incoming::parse(&body).expect("a well-formed request");
            prop_assert_eq!(parsed.kind(), Kind::Request);
            prop_assert_eq!(parsed.method.as_deref(), Some(method.as_str()));
            prop_assert_eq!(serde_json::from_str::<Value>(parsed.id_json()).unwrap(), id);
            // Params pass through as the very text sent; a present `null` reads as
            // absent (`Option`), as it always has.
            prop_assert_eq!(
                parsed.params.map(|p| p.get().to_owned()),
                params.filter(|p| !p.is_null()).map(|p| p.to_string())
            );
        }
    }
}

/// The fuzz target `jsonrpc` (SECURITY.md, "Fuzzing"): any body, through
/// [`Incoming::parse`] and [`parse_batch`]; what either accepts is consistent
/// with the JSON it was read from, and an error response echoing its id is JSON.
#[cfg(test)]
mod fuzz_targets {
    use proptest::prelude::*;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    use super::properties::{json_value, message};
    use super::*;

    fn is_json(text: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(text).is_ok()
    }

    fn check_one(body: &[u8]) -> Result<(), TestCaseError> {
        let parsed = Incoming::parse(body);
        if is_batch(body) {
            prop_assert_eq!(parsed.as_ref().err(), Some(&ParseError::Batch));
        }
        let Ok(message) = parsed else { return Ok(()) };
        prop_assert_eq!(message.jsonrpc, Some("2.0"));
        prop_assert!(
            is_json(body),
            "accepted a body that is not JSON: {:?}",
            String::from_utf8_lossy(body)
        );
        let id = message.id_json();
        prop_assert!(id.starts_with('"') || id.starts_with('-') || id.starts_with(|c: char| c.is_ascii_digit()) || id == "null");
        match message.kind() {
            Kind::Request => prop_assert!(message.id.is_some() && message.result.is_none() && message.error.is_none()),
            Kind::Notification => prop_assert!(message.id.is_none() && message.result.is_none() && message.error.is_none()),
            Kind::Response => prop_assert!(message.id.is_some() && (message.result.is_some() || message.error.is_some())),
        }
        // What is echoed back is well-formed JSON with the same id.
        let reply = error_response(id, INVALID_REQUEST, "x", None);
        prop_assert!(is_json(&reply), "{:?}", String::from_utf8_lossy(&reply));
        prop_assert!(is_json(&result_response(id, &Value::Null)));
        if let (Ok(sent), Ok(reply)) = (serde_json::from_str::<Value>(id), serde_json::from_slice::<Value>(&reply)) {
            prop_assert_eq!(&reply["id"], &sent);
        }
        for raw in [message.params, message.result, message.error].into_iter().flatten() {
            prop_assert!(is_json(raw.get().as_bytes()));
        }
        Ok(())
    }

    fn check(body: &[u8]) -> Result<(), TestCaseError> {
        check_one(body)?;
        match parse_batch(body) {
            Ok(elements) => {
                prop_assert!(!elements.is_empty());
                let array: Vec<IgnoredAny> = serde_json::from_slice(body).expect("a batch is a JSON array");
                prop_assert_eq!(array.len(), elements.len());
                for element in elements {
                    prop_assert!(is_json(element.get().as_bytes()));
                    check_one(element.get().as_bytes())?;
                }
            }
            Err(ParseError::Batch) => prop_assert!(false, "parse_batch never says Batch"),
            Err(_) => {}
        }
        Ok(())
    }

    /// Bodies: messages and batches as JSON, cut short or with a byte changed,
    /// and arbitrary bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let json = prop_oneof![
            4 => message(),
            1 => prop::collection::vec(message(), 0..4).prop_map(Value::from),
            1 => json_value(),
        ]
        .prop_map(|value| serde_json::to_vec(&value).unwrap());
        let edited = (json.clone(), any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(mut bytes, at, byte, how)| {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes.truncate(at),
                    1 => bytes[at] = byte,
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        });
        prop_oneof![4 => json, 3 => edited, 1 => any::<Vec<u8>>()]
    }

    #[test]
    fn jsonrpc() {
        fuzz::run("jsonrpc", file!(), body(), check);
    }
}
