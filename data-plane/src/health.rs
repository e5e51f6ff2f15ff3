//! Health for load balancers. `/healthz` says this process serves (always 200
//! while it runs; the body also tells whether the control plane answers);
//! `/readyz` is 503 while the control plane does not answer, so a balancer can
//! prefer instances that can do every kind of work.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

pub async fn get_healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let control_plane = if state.cp.is_serving().await {
        "serving"
    } else {
        "unreachable"
    };
    Json(json!({ "status": "ok", "control_plane": control_plane }))
}

pub async fn get_readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    if state.cp.is_serving().await {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": "control plane unreachable" })),
        )
    }
}
