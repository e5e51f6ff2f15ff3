//! Dispatch of one JSON-RPC request by method. `initialize`,
//! `server/discover` and `ping` are answered here; the list methods fan out
//! (`aggregate`); `tools/call`, `prompts/get` and `resources/read` go to the
//! one service their prefixed name names, with the client's raw id and only
//! `params.name` (or `params.uri`) rewritten; the reply is copied through.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::aggregate::{self, ListKind};
use super::error::{McpError, RpcFailure};
use super::services::{CredentialError, Service};
use super::upstream::{self, UpstreamError, UpstreamReply};
use super::wire::{self, Modern};
use super::{CallError, Caller, elicit, jsonrpc, names};
use crate::AppState;
use crate::cp_client::CpResultExt as _;
use crate::oauth::metadata::resource_metadata_url;
use crate::pb::RecordClientCapabilitiesRequest;

/// Prefix of a resource URI as clients see it: `mcp+<service>:<upstream uri>`.
pub(crate) const RESOURCE_SCHEME_PREFIX: &str = "mcp+";

/// One request being served.
pub(crate) struct Call<'a> {
    pub(crate) state: &'a Arc<AppState>,
    pub(crate) caller: &'a Arc<Caller>,
    pub(crate) token: &'a super::auth::BearerToken,
    /// The request's id as raw JSON, echoed unchanged (also to upstreams).
    pub(crate) id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) params: Option<&'a RawValue>,
    /// Set on the 2026-07-28 wire.
    pub(crate) modern: Option<&'a Modern>,
    /// The answer must be one JSON body (a batch element): SSE replies are read
    /// to their response instead of relayed.
    pub(crate) buffered: bool,
}

impl Call<'_> {
    /// A JSON-RPC error answering this request.
    pub(crate) fn fail(&self, failure: RpcFailure) -> McpError {
        McpError::Rpc {
            id: self.id.to_owned(),
            failure,
            modern: self.modern.is_some(),
        }
    }

    /// A JSON-RPC result answering this request.
    pub(crate) fn result(&self, result: &Value) -> Reply {
        Reply::Json(Bytes::from(jsonrpc::result_response(self.id, result)))
    }

    /// The 401 for a caller whose grant was revoked since it was cached.
    pub(crate) fn grant_revoked(&self) -> McpError {
        self.state.mcp.callers.remove(&self.caller.cache_key);
        McpError::InvalidToken {
            resource_metadata: resource_metadata_url(&self.state.config.public_url),
        }
    }
}

/// A request's answer.
pub(crate) enum Reply {
    /// One JSON-RPC response.
    Json(Bytes),
    /// An SSE stream relayed from an upstream.
    Stream(Response),
}

pub(crate) async fn dispatch(call: &Call<'_>) -> Result<Reply, McpError> {
    match call.method {
        "initialize" if call.modern.is_none() => initialize(call).await,
        "server/discover" => Ok(call.result(&discover())),
        "ping" => Ok(call.result(&json!({}))),
        "tools/list" => aggregate::list(call, ListKind::Tools).await,
        "prompts/list" => aggregate::list(call, ListKind::Prompts).await,
        "resources/list" => aggregate::list(call, ListKind::Resources).await,
        "resources/templates/list" => aggregate::list(call, ListKind::ResourceTemplates).await,
        "tools/call" => call_named(call, ListKind::Tools).await,
        "prompts/get" => call_named(call, ListKind::Prompts).await,
        "resources/read" => read_resource(call).await,
        other => Err(call.fail(RpcFailure::MethodNotFound(other.to_owned()))),
    }
}

fn server_info() -> Value {
    json!({ "name": "gatehouse", "version": env!("CARGO_PKG_VERSION") })
}

fn capabilities() -> Value {
    json!({ "tools": {}, "prompts": {}, "resources": {} })
}

/// `server/discover` (2026-07-28): every revision served, what is offered, who answers.
fn discover() -> Value {
    json!({
        "supportedVersions": wire::SUPPORTED_VERSIONS,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "_meta": { "io.modelcontextprotocol/serverInfo": server_info() },
        "resultType": "complete",
    })
}

/// Legacy `initialize`: the negotiated revision, no session id. What the
/// client declared about URL elicitation is recorded for its grant, since
/// later stateless requests do not repeat it (SPEC-NOTES §4.3).
async fn initialize(call: &Call<'_>) -> Result<Reply, McpError> {
    let params: Value = call
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or(Value::Null);
    let version = wire::negotiate(params.get("protocolVersion").and_then(Value::as_str));
    let declared = params.pointer("/capabilities/elicitation/url").is_some_and(Value::is_object);
    if declared != call.caller.supports_url_elicitation {
        let recorded = call
            .state
            .cp
            .tokens()
            .record_client_capabilities(RecordClientCapabilitiesRequest {
                grant_id: call.caller.grant_id.clone(),
                url_elicitation: declared,
            })
            .await
            .cp("RecordClientCapabilities");
        match recorded {
            // The cached caller says otherwise now: resolve it again next time.
            Ok(_) => call.state.mcp.callers.remove(&call.caller.cache_key),
            Err(err) => {
                tracing::warn!(target: "gatehouse::mcp", grant_id = %call.caller.grant_id, error = %err, "client capabilities not recorded")
            }
        }
    }
    Ok(call.result(&json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": "Gatehouse: the tools, prompts and resources of every connected service, each named <service>__<name>.",
    })))
}

/// The members of a request's params object, values left unparsed (absent =
/// none): the hot path rewrites one member and copies the rest through as the
/// client sent them, so `arguments` is never parsed or re-serialised here.
type RawParams<'a> = BTreeMap<String, &'a RawValue>;

/// The params of a request as raw members.
fn params_object<'a>(call: &Call<'a>) -> Result<RawParams<'a>, McpError> {
    match call.params {
        None => Ok(RawParams::new()),
        Some(raw) => serde_json::from_str::<RawParams<'a>>(raw.get())
            .map_err(|_| call.fail(RpcFailure::InvalidParams("params must be an object".into()))),
    }
}

/// A member's value when it is a JSON string.
fn string_member(params: &RawParams<'_>, key: &str) -> Option<String> {
    params.get(key).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
}

/// Keys of a 2026-07-28 retry that belong to Gatehouse, not to the upstream.
fn strip_gateway_keys(params: &mut RawParams<'_>) {
    params.remove("inputResponses");
    params.remove("requestState");
}

/// The request forwarded upstream: the client's id and method, its params
/// with member `key` set to the string `value`, every other member as sent.
fn upstream_request(call: &Call<'_>, params: &RawParams<'_>, key: &str, value: &str) -> Bytes {
    Bytes::from(request_json(call.id, call.method, params, key, value))
}

/// [`upstream_request`]'s body, from its parts.
fn request_json(id: &str, method: &str, params: &RawParams<'_>, key: &str, value: &str) -> String {
    let method = Value::String(method.to_owned()).to_string();
    let value = Value::String(value.to_owned()).to_string();
    let members: usize = params.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
    let mut out = String::with_capacity(48 + id.len() + method.len() + members + key.len() + value.len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id);
    out.push_str(r#","method":"#);
    out.push_str(&method);
    out.push_str(r#","params":{"#);
    let mut first = true;
    let mut member = |out: &mut String, k: &str, v: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(v);
    };
    let mut written = false;
    for (k, v) in params {
        if k == key {
            member(&mut out, k, &value);
            written = true;
        } else {
            member(&mut out, k, v.get());
        }
    }
    if !written {
        member(&mut out, key, &value);
    }
    out.push_str("}}");
    out
}

/// `tools/call` and `prompts/get`: `<service>__<name>` → the service, its
/// upstream name, the caller's credential, then the upstream.
async fn call_named(call: &Call<'_>, kind: ListKind) -> Result<Reply, McpError> {
    let what = kind.noun();
    let mut params = params_object(call)?;
    let Some(name) = string_member(&params, "name") else {
        return Err(call.fail(RpcFailure::InvalidParams("name is required".into())));
    };
    let unknown = || {
        call.fail(RpcFailure::Unknown {
            what,
            name: name.clone(),
        })
    };
    let services = call.state.mcp.services(&call.state.cp).await?;
    let (service_name, rest) = names::service_of(&name).ok_or_else(unknown)?;
    let service = services.iter().find(|s| s.name == service_name).ok_or_else(unknown)?;
    // A plain name needs no catalogue; a shortened one is looked up in it
    // (and one that merely looks shortened falls back to being plain).
    let plain = (names::exposed(service_name, rest) == name).then(|| rest.to_owned());
    let look_up = plain.is_none() || names::may_be_shortened(rest);
    if !look_up
        && let Some(upstream_name) = &plain
        && kind == ListKind::Tools
        && !service.exposes_tool(upstream_name)
    {
        // Security: a denied tool is unknown, never "forbidden": its existence is not revealed.
        return Err(unknown());
    }
    // Order: the credential before a catalogue lookup, so a caller who has not
    // connected the service gets the connect link even when the catalogue is
    // not known yet. A plain name needs no lookup: `forward` fetches the
    // credential first and fails the same way, so it is fetched once.
    if look_up && let Err(err) = call.state.mcp.credential(&call.state.cp, call.caller, service).await {
        return call_failed(call, service, CallError::Credential(err)).await;
    }
    let upstream_name = match (look_up, plain) {
        (false, Some(upstream_name)) => upstream_name,
        (_, plain) => match aggregate::resolve(call, service, kind, &name).await {
            Ok(Some(upstream_name)) => upstream_name,
            Ok(None) => match plain {
                Some(upstream_name) if kind != ListKind::Tools || service.exposes_tool(&upstream_name) => upstream_name,
                _ => return Err(unknown()),
            },
            Err(err) => return call_failed(call, service, err).await,
        },
    };
    strip_gateway_keys(&mut params);
    forward(call, service, upstream_request(call, &params, "name", &upstream_name)).await
}

/// `resources/read`: `mcp+<service>:<upstream uri>` → the service and its URI.
async fn read_resource(call: &Call<'_>) -> Result<Reply, McpError> {
    let mut params = params_object(call)?;
    let Some(uri) = string_member(&params, "uri") else {
        return Err(call.fail(RpcFailure::InvalidParams("uri is required".into())));
    };
    let unknown = || {
        call.fail(RpcFailure::Unknown {
            what: "resource",
            name: uri.clone(),
        })
    };
    let (service_name, upstream_uri) = uri
        .strip_prefix(RESOURCE_SCHEME_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(unknown)?;
    let services = call.state.mcp.services(&call.state.cp).await?;
    let service = services.iter().find(|s| s.name == service_name).ok_or_else(unknown)?;
    strip_gateway_keys(&mut params);
    forward(call, service, upstream_request(call, &params, "uri", upstream_uri)).await
}

/// Sends the request to `service` and hands its reply back as it came.
async fn forward(call: &Call<'_>, service: &Service, body: Bytes) -> Result<Reply, McpError> {
    let (reply, deadline) = match call.state.mcp.call(&call.state.cp, call.caller, service, body).await {
        Ok(reply) => reply,
        Err(err) => return call_failed(call, service, err).await,
    };
    match reply {
        // Hot path: the upstream's bytes, unread and unchanged.
        UpstreamReply::Json(body) => Ok(Reply::Json(body)),
        UpstreamReply::Sse(response) if call.buffered => {
            match upstream::read_response(UpstreamReply::Sse(response), deadline).await {
                Ok(message) => Ok(Reply::Json(Bytes::from(message.to_string()))),
                Err(err) => call_failed(call, service, CallError::Upstream(err)).await,
            }
        }
        UpstreamReply::Sse(response) => Ok(Reply::Stream(upstream::relay(
            response,
            deadline,
            call.id.to_owned(),
            service.name.clone(),
        ))),
        UpstreamReply::Accepted => {
            let err = UpstreamError::Malformed("202 to a request".into());
            call_failed(call, service, CallError::Upstream(err)).await
        }
    }
}

/// What the client gets when a call to `service` did not go through.
pub(super) async fn call_failed(call: &Call<'_>, service: &Service, err: CallError) -> Result<Reply, McpError> {
    let name = &service.display_name;
    match err {
        CallError::Credential(CredentialError::NotConnected | CredentialError::NeedsReauth) => {
            elicit::connect_required(call, service).await
        }
        CallError::Credential(CredentialError::InvalidGrant) => Err(call.grant_revoked()),
        CallError::Credential(CredentialError::UnknownService) => Err(call.fail(RpcFailure::Unknown {
            what: "service",
            name: service.name.clone(),
        })),
        CallError::Credential(CredentialError::ControlPlaneDown) => Err(McpError::Unavailable),
        CallError::Credential(CredentialError::ServiceUnavailable) => Err(call.fail(RpcFailure::Upstream(format!(
            "{name} is unavailable right now; try again later"
        )))),
        CallError::Credential(CredentialError::Internal) => Err(call.fail(RpcFailure::Internal)),
        CallError::Upstream(err) => {
            call.state.mcp.upstream_failed(service, call.method, &err);
            let message = match err {
                UpstreamError::Timeout => format!("{name} did not answer in time"),
                UpstreamError::Unauthorized => format!("{name} refused Gatehouse's credentials"),
                other => format!("{name} failed: {other}"),
            };
            Err(call.fail(RpcFailure::Upstream(message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(params: &str, key: &str, value: &str) -> Value {
        let members: RawParams<'_> = serde_json::from_str(params).unwrap();
        serde_json::from_str(&request_json(r#""a-1""#, "tools/call", &members, key, value)).unwrap()
    }

    #[test]
    fn only_the_named_member_is_rewritten() {
        let params =
            r#"{"name":"notes__search","arguments":{"q":"x \"y\"","n":1.5e3,"deep":[{"a":null}]},"_meta":{"progressToken":7}}"#;
        let sent = forwarded(params, "name", "search");
        let mut expected: Value = serde_json::from_str(params).unwrap();
        expected["name"] = json!("search");
        assert_eq!(
            sent,
            json!({"jsonrpc": "2.0", "id": "a-1", "method": "tools/call", "params": expected})
        );
    }

    #[test]
    fn a_missing_member_is_added_and_escapes_survive() {
        let sent = forwarded(r#"{"na\u006de":"x"}"#, "uri", "file:///a\"b");
        assert_eq!(sent["params"], json!({"name": "x", "uri": "file:///a\"b"}));
        let sent = forwarded("{}", "name", "t");
        assert_eq!(sent["params"], json!({"name": "t"}));
    }
}
