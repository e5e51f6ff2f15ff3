//! A minimal MCP client for the gateway tests: JSON-RPC over Streamable HTTP
//! with a bearer token, each request sent to the next data plane in turn
//! (round robin), JSON and SSE replies both read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use reqwest::header;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use super::fleet::Edge;

pub struct McpClient {
    http: reqwest::Client,
    urls: Vec<String>,
    token: String,
    next: AtomicUsize,
    ids: AtomicU64,
    /// Sent as `MCP-Protocol-Version` when set.
    pub version: Option<String>,
}

/// A reply read whole: the notifications an SSE stream carried, then the response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub notifications: Vec<Value>,
    pub response: Value,
    pub sse: bool,
}

impl McpClient {
    pub fn new(fleet: &Edge, token: &str) -> Self {
        Self {
            http: fleet.http(),
            urls: fleet.urls.iter().map(|u| format!("{u}/mcp")).collect(),
            token: token.to_owned(),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
            version: Some("2025-11-25".to_owned()),
        }
    }

    /// The URL of the next data plane.
    fn url(&self) -> &str {
        &self.urls[self.next.fetch_add(1, Ordering::SeqCst) % self.urls.len()]
    }

    /// POSTs `body` with the token and `headers` (added after the defaults).
    pub async fn post_raw(&self, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .http
            .post(self.url())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .bearer_auth(&self.token)
            .body(body.to_owned());
        if let Some(version) = &self.version {
            request = request.header("mcp-protocol-version", version);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST /mcp")
    }

    /// A request with a fresh id; asserts 200 and reads the reply.
    pub async fn request_with(&self, method: &str, params: Value, headers: &[(&str, &str)]) -> Reply {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self.post_raw(&body.to_string(), headers).await;
        let reply = read_reply(response).await;
        assert_eq!(reply.response["id"], json!(id), "the id is echoed: {:?}", reply.response);
        reply
    }

    /// A request; returns its response message.
    pub async fn request(&self, method: &str, params: Value) -> Value {
        self.request_with(method, params, &[]).await.response
    }

    /// A request that must succeed; returns its result.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        assert!(response.get("error").is_none(), "{method} failed: {response}");
        response["result"].clone()
    }

    /// `initialize` with `capabilities`, then `notifications/initialized` (202).
    pub async fn initialize(&self, capabilities: Value) -> Value {
        let result = self
            .result(
                "initialize",
                json!({ "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": { "name": "test", "version": "1" } }),
            )
            .await;
        let response = self
            .post_raw(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, &[])
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        result
    }

    /// Every tool's name from `tools/list`.
    pub async fn tool_names(&self) -> Vec<String> {
        let result = self.result("tools/list", json!({})).await;
        result["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// `tools/call`; returns the response message.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({ "name": name, "arguments": arguments }))
            .await
    }

    /// The text of a successful tool call's first content item.
    pub async fn call_text(&self, name: &str, arguments: Value) -> String {
        let response = self.call_tool(name, arguments).await;
        let result = &response["result"];
        assert_eq!(result["isError"], json!(false), "{name}: {response}");
        result["content"][0]["text"].as_str().expect("text").to_owned()
    }
}

/// Reads a 200 reply: JSON, or SSE up to and including the response.
pub async fn read_reply(response: Response) -> Reply {
    let status = response.status();
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{text}");
    if !sse {
        return Reply {
            notifications: Vec::new(),
            response: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
            sse,
        };
    }
    let mut notifications = Vec::new();
    for event in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() || data.iter().all(|d| d.is_empty()) {
            continue;
        }
        let message: Value = serde_json::from_str(&data.join("\n")).expect("event JSON");
        if message.get("method").is_none() {
            return Reply {
                notifications,
                response: message,
                sse,
            };
        }
        notifications.push(message);
    }
    panic!("the stream ended without a response: {text}");
}
