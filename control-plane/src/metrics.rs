//! Control-plane metrics, served in the Prometheus text format on
//! `control_plane.metrics_listen` ([`serve`]; off when unset):
//!
//! - `gatehouse_grpc_requests_total{method,code}` and
//!   `gatehouse_grpc_request_duration_seconds{method}` (a histogram, to the
//!   end of the response stream): `method` is a full method name of a served
//!   service (`/gatehouse.v1.TokenService/ResolveAccessToken`), `other` for
//!   any path no service has, so a caller cannot invent label values; `code`
//!   the gRPC status name.
//! - `gatehouse_control_plane_upstream_refreshes_total{outcome}`: `refreshed`,
//!   `needs_reauth`, `failed`.
//! - `gatehouse_control_plane_flow_steps_total{step}`: `started`,
//!   `identity_chosen`, `signed_in`, `connect_started`, `service_connected`,
//!   `connect_failed`, `approved`, `denied`.
//!
//! Refreshes and flow steps are counted from the audit events that record them
//! ([`audited`]), so each is counted exactly when it is audited.
//!
//! The counters are the process's (one control plane per process, or `gatehouse up`).
//! [`GrpcLayer`] also gives each call its span: the caller's request id
//! (`x-request-id`) and the trace continued from its `traceparent`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

#[path = "../../proto/histogram.rs"]
mod histogram;
#[path = "../../proto/trace_context.rs"]
pub mod trace_context;

use self::histogram::Histogram;
use self::trace_context::{SpanIds, TRACEPARENT};

/// gRPC status names, by code (0..=16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// Refresh outcomes, by the audit action that records each.
const REFRESHES: [(&str, &str); 3] = [
    ("connection.refresh", "refreshed"),
    ("connection.needs_reauth", "needs_reauth"),
    ("connection.refresh_failed", "failed"),
];

/// Flow steps, by the audit action that records each.
const FLOW_STEPS: [(&str, &str); 8] = [
    ("flow.start", "started"),
    ("flow.identity", "identity_chosen"),
    ("flow.sign_in", "signed_in"),
    ("connection.begin", "connect_started"),
    ("connection.connect", "service_connected"),
    ("connection.connect_failed", "connect_failed"),
    ("flow.approve", "approved"),
    ("flow.deny", "denied"),
];

#[derive(Default)]
struct MethodSeries {
    by_code: [AtomicU64; CODES.len()],
    latency: Histogram,
}

struct Metrics {
    /// Full method name → its series; fixed at start, so lookups take no lock.
    methods: HashMap<String, MethodSeries>,
    other: MethodSeries,
    refreshes: [AtomicU64; REFRESHES.len()],
    flow_steps: [AtomicU64; FLOW_STEPS.len()],
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut methods = HashMap::new();
    for set in [crate::pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let name = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    methods.insert(name, MethodSeries::default());
                }
            }
        }
    }
    for reflection in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        methods.insert(reflection.to_owned(), MethodSeries::default());
    }
    Metrics {
        methods,
        other: MethodSeries::default(),
        refreshes: Default::default(),
        flow_steps: Default::default(),
    }
});

/// Counts an audited action that is a refresh outcome or a flow step (`audit::record`).
pub fn audited(action: &str) {
    if let Some(i) = REFRESHES.iter().position(|(a, _)| *a == action) {
        METRICS.refreshes[i].fetch_add(1, Ordering::Relaxed);
    } else if let Some(i) = FLOW_STEPS.iter().position(|(a, _)| *a == action) {
        METRICS.flow_steps[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    let metrics = &*METRICS;
    let mut out = String::with_capacity(8 * 1024);
    let mut methods: Vec<(&str, &MethodSeries)> = metrics.methods.iter().map(|(m, s)| (m.as_str(), s)).collect();
    methods.sort_by_key(|(m, _)| *m);
    methods.push(("other", &metrics.other));
    out.push_str(
        "# HELP gatehouse_grpc_requests_total gRPC calls answered, by full method name and status code.\n\
         # TYPE gatehouse_grpc_requests_total counter\n",
    );
    for (method, series) in &methods {
        for (code, count) in CODES.iter().zip(&series.by_code) {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "gatehouse_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}"
                );
            }
        }
    }
    out.push_str(
        "# HELP gatehouse_grpc_request_duration_seconds Time from a gRPC call's arrival to the end of its answer, by full method name.\n\
         # TYPE gatehouse_grpc_request_duration_seconds histogram\n",
    );
    for (method, series) in &methods {
        if series.latency.count() > 0 {
            series.latency.render(
                &mut out,
                "gatehouse_grpc_request_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
    }
    out.push_str(
        "# HELP gatehouse_control_plane_upstream_refreshes_total Upstream token refreshes, by outcome.\n\
         # TYPE gatehouse_control_plane_upstream_refreshes_total counter\n",
    );
    for ((_, outcome), count) in REFRESHES.iter().zip(&metrics.refreshes) {
        let count = count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "gatehouse_control_plane_upstream_refreshes_total{{outcome=\"{outcome}\"}} {count}"
        );
    }
    out.push_str(
        "# HELP gatehouse_control_plane_flow_steps_total Consent-flow steps taken, by step.\n\
         # TYPE gatehouse_control_plane_flow_steps_total counter\n",
    );
    for ((_, step), count) in FLOW_STEPS.iter().zip(&metrics.flow_steps) {
        let count = count.load(Ordering::Relaxed);
        let _ = writeln!(out, "gatehouse_control_plane_flow_steps_total{{step=\"{step}\"}} {count}");
    }
    out
}

// === The gRPC layer ===

/// Span, trace context and metrics of every gRPC call (`grpc::router`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcLayer;

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcObserve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcObserve { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcObserve<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcObserve<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let metrics = &*METRICS;
        let path = request.uri().path();
        let (method, series) = match metrics.methods.get_key_value(path) {
            Some((name, series)) => (name.as_str(), series),
            None => ("other", &metrics.other),
        };
        let headers = request.headers();
        // The data plane's request id, when it is fit for a log line.
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| trace_context::sane_request_id(v.as_bytes()))
            .unwrap_or_default();
        let parent = headers.get(TRACEPARENT).and_then(|v| SpanIds::parse(v.as_bytes()));
        let span = tracing::info_span!(
            "grpc",
            method,
            request_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        trace_context::start(&span, parent.as_ref());
        let answered = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let mut record = Record {
                series,
                start,
                code: None,
                span: span.clone(),
            };
            let result = {
                use tracing::Instrument as _;
                answered.instrument(span).await
            };
            if result.is_err() {
                record.code = Some(UNKNOWN);
            }
            result.map(|response| {
                // A trailers-only answer (every refusal) has its status in the head.
                record.code = grpc_status(response.headers());
                response.map(|body| Observed { body, record })
            })
        })
    }
}

/// The status code in `grpc-status`, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<usize>().ok()?;
    Some(if code < CODES.len() { code } else { UNKNOWN })
}

/// Counts a call once, when its answer ends (or is dropped: `CANCELLED`).
struct Record {
    series: &'static MethodSeries,
    start: Instant,
    code: Option<usize>,
    span: tracing::Span,
}

impl Drop for Record {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(CANCELLED);
        let elapsed = self.start.elapsed();
        self.series.by_code[code].fetch_add(1, Ordering::Relaxed);
        self.series.latency.observe(elapsed);
        let _entered = self.span.enter();
        tracing::debug!(
            code = CODES[code],
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "gRPC call finished"
        );
    }
}

/// A response body that reads the status from the trailers and counts the
/// call when the body ends.
pub struct Observed<B> {
    body: B,
    record: Record,
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = {
            // Streams (WatchEvents) log inside the call's span too.
            let _entered = this.record.span.enter();
            Pin::new(&mut this.body).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(code) = grpc_status(trailers)
                {
                    this.record.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.record.code = this.record.code.or(Some(UNKNOWN)),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

// === The HTTP listener ===

/// The `/metrics` listener. Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `GET /metrics` (HTTP/1.1, plaintext) on `listener`; every other
/// request gets 404. Meant for a private address that only Prometheus reaches.
pub fn serve(listener: TcpListener) -> std::io::Result<MetricsServer> {
    let addr = listener.local_addr()?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
                        http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                            .body(render())
                    } else {
                        http::Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .body("not found\n".to_owned())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    tracing::info!(target: "gatehouse::control_plane", %addr, "control-plane metrics serving HTTP");
    Ok(MetricsServer {
        addr,
        shutdown: Some(tx),
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_methods_are_those_served_and_audited_steps_are_counted() {
        assert!(METRICS.methods.contains_key("/gatehouse.v1.TokenService/ResolveAccessToken"));
        assert!(METRICS.methods.contains_key("/grpc.health.v1.Health/Check"));
        assert!(!METRICS.methods.contains_key("/gatehouse.v1.TokenService/Invented"));
        audited("flow.approve");
        audited("connection.needs_reauth");
        audited("token.issue");
        let text = render();
        let value = |series: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{series} in\n{text}"))
        };
        assert!(value("gatehouse_control_plane_flow_steps_total{step=\"approved\"}") >= 1);
        assert!(value("gatehouse_control_plane_upstream_refreshes_total{outcome=\"needs_reauth\"}") >= 1);
    }
}
