//! `/mcp`, for now only its front door: authentication (RFC 6750, RFC 9728
//! challenges) in `auth`, then a placeholder answer until the gateway issue
//! replaces it (POST: 501 with a JSON-RPC error; GET and DELETE: 405).

pub(crate) mod auth;
pub(crate) mod error;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::post;

pub(crate) use self::auth::Caller;
use self::error::McpError;
use crate::AppState;

/// The `/mcp` route.
pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/mcp", post(post_mcp).get(get_or_delete_mcp).delete(get_or_delete_mcp))
        // Order: route_layer, so only the matched route (every method of it)
        // authenticates and an unknown path never calls the control plane.
        .route_layer(middleware::from_fn_with_state(state, auth::authenticate))
}

/// `POST /mcp`: authenticated; the gateway is a later issue.
async fn post_mcp(caller: axum::Extension<Caller>) -> McpError {
    tracing::debug!(target: "gatehouse::mcp", grant_id = %caller.grant_id, client_id = %caller.client_id, "authenticated /mcp call; gateway not implemented");
    McpError::NotImplemented
}

/// `GET` and `DELETE /mcp`: no stream and no sessions yet.
async fn get_or_delete_mcp() -> McpError {
    McpError::MethodNotAllowed
}
