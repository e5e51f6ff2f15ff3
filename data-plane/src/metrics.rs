//! `GET /metrics`: counters for operators, in the Prometheus text format.
//! Names follow `gatehouse_<plane>_<noun>_<unit>`; label values are service
//! names (`[a-z0-9-]`), never anything a client sent.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

pub(crate) async fn get_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = String::from(
        "# HELP gatehouse_data_plane_upstream_errors_total Upstream MCP calls that failed (timeouts, transport or protocol errors).\n\
         # TYPE gatehouse_data_plane_upstream_errors_total counter\n",
    );
    for (server, count) in state.mcp.upstream_failure_counts() {
        let _ = writeln!(
            text,
            "gatehouse_data_plane_upstream_errors_total{{server=\"{server}\"}} {count}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
