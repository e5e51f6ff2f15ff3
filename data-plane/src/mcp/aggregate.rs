//! The list methods across every service: each service asked concurrently
//! within its own time limit, tools filtered by its allow and deny lists,
//! names prefixed (`names::exposed`) and resource URIs rewritten
//! (`mcp+<service>:<uri>`), every other field kept. A service that fails or
//! is too slow is left out, logged and counted; the others are listed. A
//! service the caller has not connected shows the tools (and prompts) other
//! callers' listings put in the shared catalogue, or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::dispatch::{Call, RESOURCE_SCHEME_PREFIX, Reply};
use super::error::McpError;
use super::services::{CredentialError, Service};
use super::upstream::{self, UpstreamError};
use super::{CallError, Caller, names};
use crate::AppState;

/// Pages followed per service and list call.
const MAX_PAGES: usize = 20;

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result's array.
    fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    /// What one item is called in errors.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Self::Tools => "tool",
            Self::Prompts => "prompt",
            Self::Resources | Self::ResourceTemplates => "resource",
        }
    }
}

/// One service's listing could not be made because the grant is gone.
struct GrantRevoked;

/// `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list`.
pub(crate) async fn list(call: &Call<'_>, kind: ListKind) -> Result<Reply, McpError> {
    let services = call.state.mcp.services(&call.state.cp).await?;
    let mut tasks = JoinSet::new();
    for (index, service) in services.iter().enumerate() {
        let state = call.state.clone();
        let caller = call.caller.clone();
        let service = service.clone();
        tasks.spawn(crate::layers::in_request(async move {
            (index, list_service(&state, &caller, &service, kind).await)
        }));
    }
    let mut parts: Vec<(usize, Vec<Value>)> = Vec::with_capacity(services.len());
    let mut revoked = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, Ok(items))) => parts.push((index, items)),
            Ok((_, Err(GrantRevoked))) => revoked = true,
            Err(err) => tracing::error!(target: "gatehouse::mcp", error = %err, "a listing task failed"),
        }
    }
    if revoked {
        return Err(call.grant_revoked());
    }
    parts.sort_by_key(|(index, _)| *index);
    let items: Vec<Value> = parts.into_iter().flat_map(|(_, items)| items).collect();
    let mut result = serde_json::Map::new();
    result.insert(kind.key().to_owned(), Value::Array(items));
    Ok(call.result(&Value::Object(result)))
}

/// One service's items, renamed; empty when it cannot be listed now.
async fn list_service(
    state: &Arc<AppState>,
    caller: &Caller,
    service: &Service,
    kind: ListKind,
) -> Result<Vec<Value>, GrantRevoked> {
    let items = match fetch(state, caller, service, kind).await {
        Ok(items) => items,
        Err(CallError::Credential(CredentialError::NotConnected | CredentialError::NeedsReauth)) => {
            // Not connected: what the service offers, as far as it is known.
            catalogue(state, kind, &service.name)
                .map(|items| items.to_vec())
                .unwrap_or_default()
        }
        Err(CallError::Credential(CredentialError::InvalidGrant)) => return Err(GrantRevoked),
        Err(CallError::Upstream(err)) => {
            state.mcp.upstream_failed(service, kind.method(), &err);
            Vec::new()
        }
        Err(CallError::Credential(err)) => {
            tracing::warn!(target: "gatehouse::mcp", service = %service.name, error = %err, "no credential to list the service");
            Vec::new()
        }
    };
    // Security: names are given over the whole catalogue, so no two tools share one (names::exposed_all).
    let shown = names::exposed_all(
        &service.name,
        items
            .iter()
            .filter_map(|item| item.get("name").and_then(Value::as_str))
            .filter(|name| kind != ListKind::Tools || service.exposes_tool(name)),
    );
    Ok(items
        .into_iter()
        .filter_map(|item| expose(service, kind, item, &shown))
        .collect())
}

fn catalogue(state: &AppState, kind: ListKind, service: &str) -> Option<Arc<Vec<Value>>> {
    let (found, counts) = match kind {
        ListKind::Tools => (
            state.mcp.tool_catalogues.get(&service.to_owned()),
            &state.mcp.cache_counts.tools,
        ),
        ListKind::Prompts => (
            state.mcp.prompt_catalogues.get(&service.to_owned()),
            &state.mcp.cache_counts.prompts,
        ),
        ListKind::Resources | ListKind::ResourceTemplates => return None,
    };
    if found.is_some() {
        counts.hit()
    } else {
        counts.miss()
    }
    found
}

/// Asks the upstream for every page of a list (as `caller`), filters tools by
/// the service's lists and keeps tools and prompts in the shared catalogue.
pub(crate) async fn fetch(state: &AppState, caller: &Caller, service: &Service, kind: ListKind) -> Result<Vec<Value>, CallError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let params = match &cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        let body = json!({ "jsonrpc": "2.0", "id": format!("gatehouse-list-{page}"), "method": kind.method(), "params": params });
        let (reply, deadline) = state
            .mcp
            .call(&state.cp, caller, service, Bytes::from(body.to_string()))
            .await?;
        let message = upstream::read_response(reply, deadline).await.map_err(CallError::Upstream)?;
        if let Some(error) = message.get("error") {
            // A server without prompts or resources says so with an error: nothing to list.
            if error.get("code").and_then(Value::as_i64) == Some(super::jsonrpc::METHOD_NOT_FOUND) {
                break;
            }
            return Err(CallError::Upstream(UpstreamError::Malformed(format!(
                "{} answered error {}",
                kind.method(),
                error.get("code").unwrap_or(&Value::Null)
            ))));
        }
        let result = &message["result"];
        if let Some(page_items) = result.get(kind.key()).and_then(Value::as_array) {
            items.extend(page_items.iter().cloned());
        }
        cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    if kind == ListKind::Tools {
        items.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| service.exposes_tool(n))
        });
    }
    let shared = Arc::new(items.clone());
    match kind {
        ListKind::Tools => state
            .mcp
            .tool_catalogues
            .insert(service.name.clone(), shared, super::CATALOGUE_TTL),
        ListKind::Prompts => state
            .mcp
            .prompt_catalogues
            .insert(service.name.clone(), shared, super::CATALOGUE_TTL),
        ListKind::Resources | ListKind::ResourceTemplates => {}
    }
    Ok(items)
}

/// The upstream name a shortened `exposed` name stands for: from the shared
/// catalogue, listed again once when it is not there.
pub(crate) async fn resolve(
    call: &Call<'_>,
    service: &Service,
    kind: ListKind,
    exposed: &str,
) -> Result<Option<String>, CallError> {
    let find = |items: &[Value]| {
        let upstream_names = items.iter().filter_map(|item| item.get("name").and_then(Value::as_str));
        names::resolve(&service.name, exposed, upstream_names).map(str::to_owned)
    };
    if let Some(items) = catalogue(call.state, kind, &service.name)
        && let Some(name) = find(&items)
    {
        return Ok(Some(name));
    }
    let items = fetch(call.state, call.caller, service, kind).await?;
    Ok(find(&items))
}

/// An upstream item as clients see it; `None` for a tool the service hides.
/// `shown` holds the catalogue's names (`names::exposed_all`).
fn expose(service: &Service, kind: ListKind, mut item: Value, shown: &BTreeMap<String, String>) -> Option<Value> {
    let object = item.as_object_mut()?;
    match kind {
        ListKind::Tools | ListKind::Prompts => {
            let name = object.get("name")?.as_str()?.to_owned();
            if kind == ListKind::Tools && !service.exposes_tool(&name) {
                return None;
            }
            let exposed = shown
                .get(&name)
                .cloned()
                .unwrap_or_else(|| names::exposed(&service.name, &name));
            object.insert("name".into(), Value::String(exposed));
        }
        ListKind::Resources => {
            let uri = object.get("uri")?.as_str()?.to_owned();
            object.insert(
                "uri".into(),
                Value::String(format!("{RESOURCE_SCHEME_PREFIX}{}:{uri}", service.name)),
            );
        }
        ListKind::ResourceTemplates => {
            let template = object.get("uriTemplate")?.as_str()?.to_owned();
            object.insert(
                "uriTemplate".into(),
                Value::String(format!("{RESOURCE_SCHEME_PREFIX}{}:{template}", service.name)),
            );
        }
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::services::AuthMode;

    fn service() -> Service {
        Service {
            name: "notes".into(),
            display_name: "Notes".into(),
            url: "http://x".into(),
            auth_mode: AuthMode::None,
            allow_tools: vec![],
            deny_tools: vec!["drop".into()],
            timeout_ms: 0,
        }
    }

    #[test]
    fn items_are_renamed_and_everything_else_is_kept() {
        let tool = json!({"name": "search", "description": "d", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}});
        let shown = expose(&service(), ListKind::Tools, tool, &BTreeMap::new()).unwrap();
        assert_eq!(
            shown,
            json!({"name": "notes__search", "description": "d", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}})
        );
        assert!(
            expose(&service(), ListKind::Tools, json!({"name": "drop"}), &BTreeMap::new()).is_none(),
            "denied"
        );
        let resource = expose(
            &service(),
            ListKind::Resources,
            json!({"uri": "file:///a", "name": "a"}),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(resource["uri"], "mcp+notes:file:///a");
        let template = expose(
            &service(),
            ListKind::ResourceTemplates,
            json!({"uriTemplate": "x://{id}"}),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(template["uriTemplate"], "mcp+notes:x://{id}");
        assert!(
            expose(
                &service(),
                ListKind::Tools,
                json!({"description": "no name"}),
                &BTreeMap::new()
            )
            .is_none()
        );
    }
}
