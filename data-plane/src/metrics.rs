//! `GET /metrics`: counters for operators, in the Prometheus text format.
//!
//! - `gatehouse_http_requests_total{route,method,status}` and
//!   `gatehouse_http_request_duration_seconds{route,method}` (a histogram):
//!   `route` is the matched route template (`/consent/{flow_id}/identity`),
//!   never the path, so no id or secret becomes a label; `unmatched` otherwise.
//! - `gatehouse_data_plane_cache_hits_total{cache}` and `…_misses_total{cache}`:
//!   `caller`, `credential`, `services`, `tools`, `prompts` ([`CacheCounts`]).
//! - `gatehouse_data_plane_upstream_errors_total{server}`: failed upstream MCP calls.
//!
//! Label values are route templates, method names, status codes and service
//! names (`[a-z0-9-]`), never anything a client sent. Counting is a relaxed
//! atomic add; a request takes one read lock to find its route's series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse;

use crate::AppState;
use crate::histogram::Histogram;

pub(crate) async fn get_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = String::with_capacity(8 * 1024);
    state.metrics.render(&mut text);
    state.mcp.cache_counts.render(&mut text);
    text.push_str(
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

/// Status codes 100..=599, one counter each.
const STATUSES: usize = 500;

/// The series of one route and method.
struct RouteSeries {
    by_status: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            by_status: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
        }
    }
}

/// The methods counted by name; any other is `other`.
const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// HTTP requests by route template, method and status.
#[derive(Default)]
pub struct HttpMetrics {
    /// Per method (as [`METHODS`]): route template → its series. Routes are
    /// the router's templates, so the maps stay as small as the router.
    routes: [RwLock<HashMap<Box<str>, Arc<RouteSeries>>>; METHODS.len()],
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let routes = &self.routes[method_index(method)];
        let found = routes.read().unwrap_or_else(|e| e.into_inner()).get(route).cloned();
        let series = match found {
            Some(series) => series,
            None => routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(route.into())
                .or_default()
                .clone(),
        };
        let slot = usize::from(status.clamp(100, 599) - 100);
        series.by_status[slot].fetch_add(1, Ordering::Relaxed);
        series.latency.observe(elapsed);
    }

    fn render(&self, out: &mut String) {
        let mut all: Vec<(&str, String, Arc<RouteSeries>)> = Vec::new();
        let guards: Vec<_> = self
            .routes
            .iter()
            .map(|r| r.read().unwrap_or_else(|e| e.into_inner()))
            .collect();
        for (method, routes) in METHODS.iter().zip(&guards) {
            for (route, series) in routes.iter() {
                all.push((method, route.to_string(), series.clone()));
            }
        }
        drop(guards);
        all.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        out.push_str(
            "# HELP gatehouse_http_requests_total HTTP requests answered, by route template, method and status.\n\
             # TYPE gatehouse_http_requests_total counter\n",
        );
        for (method, route, series) in &all {
            for (slot, count) in series.by_status.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let status = slot + 100;
                    let _ = writeln!(
                        out,
                        "gatehouse_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP gatehouse_http_request_duration_seconds Time to answer an HTTP request (to the response head), by route template and method.\n\
             # TYPE gatehouse_http_request_duration_seconds histogram\n",
        );
        for (method, route, series) in all.iter().filter(|(_, _, s)| s.latency.count() > 0) {
            series.latency.render(
                out,
                "gatehouse_http_request_duration_seconds",
                &format!("route=\"{route}\",method=\"{method}\""),
            );
        }
    }
}

/// Hits and misses of one cache.
#[derive(Default)]
pub struct HitMiss {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl HitMiss {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lookups of `/mcp`'s caches (`mcp::cache`), counted where they are read.
/// With `cache_callers_and_credentials = false` every caller and credential
/// lookup counts as a miss.
#[derive(Default)]
pub struct CacheCounts {
    /// Bearer token → caller.
    pub caller: HitMiss,
    /// (grant, service) → upstream credential.
    pub credential: HitMiss,
    /// The service catalogue (`ListServices`).
    pub services: HitMiss,
    /// Service → its upstream tools.
    pub tools: HitMiss,
    /// Service → its upstream prompts.
    pub prompts: HitMiss,
}

impl CacheCounts {
    fn render(&self, out: &mut String) {
        let caches = [
            ("caller", &self.caller),
            ("credential", &self.credential),
            ("services", &self.services),
            ("tools", &self.tools),
            ("prompts", &self.prompts),
        ];
        for (what, pick) in [("hits", 0), ("misses", 1)] {
            let _ = write!(
                out,
                "# HELP gatehouse_data_plane_cache_{what}_total Lookups of a data-plane cache that found {}, by cache.\n\
                 # TYPE gatehouse_data_plane_cache_{what}_total counter\n",
                if pick == 0 { "a live entry" } else { "nothing usable" }
            );
            for (cache, counts) in caches {
                let count = if pick == 0 { &counts.hits } else { &counts.misses };
                let _ = writeln!(
                    out,
                    "gatehouse_data_plane_cache_{what}_total{{cache=\"{cache}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_requests_are_counted_by_route_method_and_status_with_a_histogram() {
        let metrics = HttpMetrics::default();
        metrics.record("/consent/{flow_id}/identity", &Method::GET, 200, Duration::from_millis(3));
        metrics.record("/consent/{flow_id}/identity", &Method::GET, 200, Duration::from_millis(30));
        metrics.record("/consent/{flow_id}/identity", &Method::GET, 404, Duration::from_secs(20));
        metrics.record("/mcp", &Method::from_bytes(b"BREW").unwrap(), 405, Duration::ZERO);
        let mut text = String::new();
        metrics.render(&mut text);
        for line in [
            "gatehouse_http_requests_total{route=\"/consent/{flow_id}/identity\",method=\"GET\",status=\"200\"} 2",
            "gatehouse_http_requests_total{route=\"/consent/{flow_id}/identity\",method=\"GET\",status=\"404\"} 1",
            "gatehouse_http_requests_total{route=\"/mcp\",method=\"other\",status=\"405\"} 1",
            "gatehouse_http_request_duration_seconds_bucket{route=\"/consent/{flow_id}/identity\",method=\"GET\",le=\"0.005\"} 1",
            "gatehouse_http_request_duration_seconds_bucket{route=\"/consent/{flow_id}/identity\",method=\"GET\",le=\"0.05\"} 2",
            "gatehouse_http_request_duration_seconds_bucket{route=\"/consent/{flow_id}/identity\",method=\"GET\",le=\"10\"} 2",
            "gatehouse_http_request_duration_seconds_bucket{route=\"/consent/{flow_id}/identity\",method=\"GET\",le=\"+Inf\"} 3",
            "gatehouse_http_request_duration_seconds_count{route=\"/consent/{flow_id}/identity\",method=\"GET\"} 3",
            "gatehouse_http_request_duration_seconds_sum{route=\"/consent/{flow_id}/identity\",method=\"GET\"} 20.033",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn metrics_cache_hits_and_misses_are_counted_by_cache() {
        let counts = CacheCounts::default();
        counts.caller.hit();
        counts.caller.hit();
        counts.credential.miss();
        let mut text = String::new();
        counts.render(&mut text);
        assert!(
            text.contains("gatehouse_data_plane_cache_hits_total{cache=\"caller\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_data_plane_cache_misses_total{cache=\"credential\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_data_plane_cache_misses_total{cache=\"tools\"} 0\n"),
            "{text}"
        );
    }
}
