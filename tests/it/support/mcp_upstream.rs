//! A scriptable upstream MCP server for the gateway tests (Streamable HTTP,
//! JSON-RPC 2.0), for what the demo upstream does not play: no auth or a
//! static header, a slow server, SSE replies with progress notifications,
//! session ids that expire (404) and whom each was issued to, a broken
//! server (an error status or garbage for a reply), and a record of every
//! request's headers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the fixture behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Tool names it offers (each echoes its arguments).
    pub tools: Vec<String>,
    /// Delay before answering any request.
    pub delay: Duration,
    /// Answer requests as SSE streams, with `notifications/progress` before the result.
    pub sse: bool,
    /// Issue session ids at initialize and require them afterwards.
    pub sessions: bool,
    /// A header (name, value) every request must carry, else 401.
    pub required_header: Option<(String, String)>,
    /// How every request but `initialize` is answered instead of properly.
    pub broken: Option<Broken>,
}

/// How a broken upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Broken {
    /// This HTTP status, with a short text body.
    Status(u16),
    /// 200 `application/json` whose body is not JSON.
    Garbage,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            tools: vec!["echo".into()],
            delay: Duration::ZERO,
            sse: false,
            sessions: false,
            required_header: None,
            broken: None,
        }
    }
}

#[derive(Default)]
pub struct Recorded {
    pub requests: Mutex<Vec<(HeaderMap, Value)>>,
    pub sessions_opened: AtomicU64,
    /// Every session id issued, with the `Authorization` of the `initialize`
    /// that opened it and whether it is still known.
    pub sessions: Mutex<Vec<IssuedSession>>,
}

/// A session id the fixture issued.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub id: String,
    /// The `Authorization` header of its `initialize` ("" without one).
    pub authorization: String,
    /// False once [`McpUpstream::expire_session`] forgot it.
    pub live: bool,
}

struct Shared {
    script: Script,
    recorded: Arc<Recorded>,
}

/// A running fixture; stops on drop.
pub struct McpUpstream {
    pub url: String,
    pub recorded: Arc<Recorded>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl McpUpstream {
    pub async fn start(script: Script) -> Self {
        let recorded = Arc::new(Recorded::default());
        let shared = Arc::new(Shared {
            script,
            recorded: recorded.clone(),
        });
        let app = axum::Router::new()
            .route("/mcp", post(post_mcp).get(|| async { StatusCode::METHOD_NOT_ALLOWED }))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, recorded, task }
    }

    /// Forgets every session issued so far, so the next request with one gets 404.
    pub fn expire_session(&self) {
        for session in self.recorded.sessions.lock().unwrap().iter_mut() {
            session.live = false;
        }
    }

    /// Authorization → the session ids issued to it.
    pub fn sessions_by_authorization(&self) -> BTreeMap<String, Vec<String>> {
        let mut by = BTreeMap::<String, Vec<String>>::new();
        for session in self.recorded.sessions.lock().unwrap().iter() {
            by.entry(session.authorization.clone()).or_default().push(session.id.clone());
        }
        by
    }

    /// (Authorization, session id) of every request that carried a session id.
    pub fn session_uses(&self) -> Vec<(String, String)> {
        self.recorded
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(headers, _)| {
                let session = headers.get("mcp-session-id")?.to_str().ok()?.to_owned();
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                Some((authorization, session))
            })
            .collect()
    }

    /// Every request's headers, lowercased name → value.
    pub fn all_headers(&self) -> Vec<Vec<(String, String)>> {
        self.recorded
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| {
                h.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect()
            })
            .collect()
    }
}

async fn post_mcp(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let message: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "not json").into_response(),
    };
    shared
        .recorded
        .requests
        .lock()
        .unwrap()
        .push((headers.clone(), message.clone()));
    if let Some((name, value)) = &shared.script.required_header
        && headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "missing credential").into_response();
    }
    tokio::time::sleep(shared.script.delay).await;
    let method = message["method"].as_str().unwrap_or("").to_string();
    let id = message.get("id").cloned();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let sent_session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if shared.script.sessions && method != "initialize" {
        let known = sent_session.as_deref().is_some_and(|sent| {
            shared
                .recorded
                .sessions
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.live && s.id == sent)
        });
        if !known {
            return (StatusCode::NOT_FOUND, "unknown session").into_response();
        }
    }
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    match shared.script.broken {
        Some(Broken::Status(status)) if method != "initialize" => {
            return (StatusCode::from_u16(status).expect("status"), "the fixture is broken").into_response();
        }
        Some(Broken::Garbage) if method != "initialize" => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"jsonrpc\": \"2.0\", garbage"))
                .expect("response");
        }
        _ => {}
    }
    let result = match method.as_str() {
        "initialize" => json!({
            "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": { "tools": {}, "prompts": {}, "resources": {} },
            "serverInfo": { "name": "fixture", "version": "1" }
        }),
        "tools/list" => json!({ "tools": shared.script.tools.iter().map(|t| json!({
            "name": t, "description": format!("fixture tool {t}"),
            "inputSchema": { "type": "object", "properties": { "text": { "type": "string" } } }
        })).collect::<Vec<_>>() }),
        "tools/call" => {
            let name = message["params"]["name"].as_str().unwrap_or("");
            if !shared.script.tools.iter().any(|t| t == name) {
                return json_response(
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":-32602,"message":"Unknown tool"}}),
                    None,
                );
            }
            json!({ "content": [{ "type": "text", "text": format!("{name}: {}", message["params"]["arguments"]) }],
                    "structuredContent": { "tool": name, "arguments": message["params"]["arguments"],
                                           "authorization": authorization, "session": sent_session },
                    "isError": false })
        }
        "prompts/list" => json!({ "prompts": [{ "name": "greeting", "description": "a greeting" }] }),
        "prompts/get" => json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": "hello" } }] }),
        "resources/list" => json!({ "resources": [{ "uri": "fixture://readme", "name": "readme" }] }),
        "resources/read" => json!({ "contents": [{ "uri": message["params"]["uri"], "text": "read me" }] }),
        "ping" => json!({}),
        _ => {
            return json_response(
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"Method not found"}}),
                None,
            );
        }
    };
    let session = if shared.script.sessions && method == "initialize" {
        let session = format!("s{}", shared.recorded.sessions_opened.fetch_add(1, Ordering::SeqCst) + 1);
        shared.recorded.sessions.lock().unwrap().push(IssuedSession {
            id: session.clone(),
            authorization: authorization.clone(),
            live: true,
        });
        Some(session)
    } else {
        None
    };
    let reply = json!({ "jsonrpc": "2.0", "id": id, "result": result });
    if shared.script.sse && method != "initialize" {
        let token = message["params"]["_meta"]["progressToken"].clone();
        let mut events = String::new();
        if !token.is_null() {
            for step in 1..=2 {
                let progress = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":step,"total":2}});
                events.push_str(&format!("event: message\ndata: {progress}\n\n"));
            }
        }
        events.push_str(&format!("event: message\ndata: {reply}\n\n"));
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(events))
            .expect("response");
    }
    json_response(reply, session)
}

fn json_response(value: Value, session: Option<String>) -> Response {
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "application/json");
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    builder.body(Body::from(value.to_string())).expect("response")
}
