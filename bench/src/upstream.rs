//! The fixture upstream: an MCP server (Streamable HTTP, JSON replies, no
//! auth, no sessions) doing as little as an MCP server can: `initialize`,
//! `tools/list` with one tool `echo`, `tools/call echo` answering with its
//! arguments, `ping`; notifications get 202. Its cost is the floor every
//! measurement stands on, so it parses only what it must.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One JSON-RPC message, borrowed from the body.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: String,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(default)]
    name: String,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(default, rename = "protocolVersion")]
    protocol_version: Option<String>,
}

/// Binds 127.0.0.1:0 and serves on the current runtime; returns the MCP URL.
pub async fn start() -> anyhow::Result<(String, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/mcp", post(post_mcp));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("fixture upstream stopped: {err}");
        }
    });
    Ok((format!("http://{addr}/mcp"), addr))
}

async fn post_mcp(body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Message<'_>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON-RPC").into_response();
    };
    let Some(id) = message.id else {
        return StatusCode::ACCEPTED.into_response();
    };
    let id = id.get();
    let reply = match message.method.as_str() {
        "tools/call" => {
            let params = message
                .params
                .and_then(|p| serde_json::from_str::<CallParams<'_>>(p.get()).ok());
            match params {
                Some(params) if params.name == "echo" => {
                    let arguments = params.arguments.map_or("{}", RawValue::get);
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"echo"}}],"structuredContent":{arguments},"isError":false}}}}"#
                    )
                }
                _ => format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"Unknown tool"}}}}"#),
            }
        }
        "initialize" => {
            let version = message
                .params
                .and_then(|p| serde_json::from_str::<InitializeParams>(p.get()).ok())
                .and_then(|p| p.protocol_version)
                .filter(|v| v.len() <= 32 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
                .unwrap_or_else(|| "2025-06-18".to_owned());
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"bench-fixture","version":"1"}}}}}}"#
            )
        }
        "tools/list" => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"echo","description":"Echoes its arguments","inputSchema":{{"type":"object","properties":{{"text":{{"type":"string"}}}}}}}}]}}}}"#
        ),
        "ping" => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
        _ => format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#),
    };
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}
