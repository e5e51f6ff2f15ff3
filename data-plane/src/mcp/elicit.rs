//! "Connect this service first": the answer to a call of a service the
//! caller has not connected (or must authorize again). The control plane
//! makes a connect link bound to the caller's grant and identity; the client
//! gets it as URL-mode elicitation when it declared that capability
//! (-32042 on the legacy wire, an `InputRequiredResult` on 2026-07-28,
//! SPEC-NOTES §5.4, §4.2), else as a tool result with `isError` and the link.
//!
//! Security: the link's URL carries its secret id, so it never reaches a log
//! line; the `elicitationId` is a separate random value. Opening the link
//! requires the same identity (the connect page and `OpenConnectLink`).

use serde_json::json;

use super::auth::refresh_caller;
use super::dispatch::{Call, Reply};
use super::error::{McpError, RpcFailure};
use super::services::Service;
use crate::cp_client::{CpError, CpResultExt as _};
use crate::pb::{CreateConnectLinkRequest, ErrorReason};

/// A new random elicitation id (128 bits, hex).
fn elicitation_id() -> String {
    rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer when `service` needs a connection first.
pub(crate) async fn connect_required(call: &Call<'_>, service: &Service) -> Result<Reply, McpError> {
    let link = call
        .state
        .cp
        .tokens()
        .create_connect_link(CreateConnectLinkRequest {
            grant_id: call.caller.grant_id.clone(),
            service: service.name.clone(),
        })
        .await
        .cp("CreateConnectLink");
    let link = match link {
        Ok(link) => link,
        Err(CpError::Unavailable) => return Err(McpError::Unavailable),
        Err(CpError::Refused {
            reason: ErrorReason::InvalidGrant,
            ..
        }) => return Err(call.grant_revoked()),
        Err(_) => return Err(call.fail(RpcFailure::Internal)),
    };
    tracing::info!(target: "gatehouse::mcp", service = %service.name, grant_id = %call.caller.grant_id, "connect link handed to the client");
    let display_name = if link.display_name.is_empty() {
        service.display_name.clone()
    } else {
        link.display_name
    };
    let message = format!("Connect {display_name} to continue.");
    let url_elicitation = match call.modern {
        Some(modern) => modern.url_elicitation,
        // What the client declared at initialize may have reached another data
        // plane after this one cached the caller: ask again (this path is rare).
        None => match refresh_caller(call.state, call.token, call.caller.cache_key).await {
            Some(caller) => caller.supports_url_elicitation,
            None => call.caller.supports_url_elicitation,
        },
    };
    if url_elicitation {
        if call.modern.is_some() {
            // 2026-07-28 MRTR: the client opens the URL, then retries the request.
            return Ok(call.result(&json!({
                "resultType": "input_required",
                "inputRequests": {
                    format!("connect_{}", service.name): {
                        "method": "elicitation/create",
                        "params": { "mode": "url", "url": link.url, "message": message },
                    }
                },
            })));
        }
        return Err(call.fail(RpcFailure::UrlElicitationRequired {
            elicitation_id: elicitation_id(),
            url: link.url,
            message,
        }));
    }
    let text = format!(
        "{message} Open this link to connect {display_name}, then try again: {}",
        link.url
    );
    if call.method == "tools/call" {
        return Ok(call.result(&json!({
            "content": [{ "type": "text", "text": text }],
            "isError": true,
        })));
    }
    Err(call.fail(RpcFailure::Upstream(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elicitation_ids_are_random_hex() {
        let (a, b) = (elicitation_id(), elicitation_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
