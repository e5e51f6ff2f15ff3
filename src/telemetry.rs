//! Logging and trace export. Logs: text or JSON lines on stderr, filtered by
//! `RUST_LOG` or `[log] filter`; a line logged inside a request carries the
//! span's `request_id`, `trace_id` and `span_id` (JSON: in `span` and `spans`).
//!
//! Traces: with `[telemetry] otlp_endpoint` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), the
//! planes' spans are exported over OTLP/HTTP as services
//! `gatehouse-data-plane` and `gatehouse-control-plane` (`gatehouse up` runs
//! both, each span goes out under its own plane's name). The planes then take
//! their trace and span ids from the exporter (`trace_context::set_exporter`),
//! so the ids in the log are those of the exported spans.

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// The OpenTelemetry service names.
pub const DATA_PLANE_SERVICE: &str = "gatehouse-data-plane";
pub const CONTROL_PLANE_SERVICE: &str = "gatehouse-control-plane";

/// Which planes this process runs (whose spans it exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planes {
    pub data: bool,
    pub control: bool,
}

/// Flushes and stops trace export when dropped (at the end of the command).
#[must_use = "export stops when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("gatehouse: trace export did not finish: {err}");
        }
    }
}

/// Installs the global subscriber (once; later calls install nothing and export nothing).
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig, planes: Planes) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal (and no `NO_COLOR`): escape codes
    // are noise in a log file or a collector, and writing them took 7 % of a
    // busy data-plane thread (BENCHMARKS.md).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (provider, export_error) = match exporting(telemetry, planes) {
        Ok(provider) => (provider, None),
        Err(err) => (None, Some(err)),
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("gatehouse"))
            // Only the planes' own spans (and the events inside them) are exported.
            .with_filter(
                Targets::new()
                    .with_target("gatehouse_data_plane", tracing::Level::TRACE)
                    .with_target("gatehouse_control_plane", tracing::Level::TRACE)
                    .with_target("gatehouse", tracing::Level::TRACE),
            )
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(err) = export_error {
        tracing::error!(target: "gatehouse::telemetry", error = %err, "trace export is off: the OTLP exporter could not be built");
    }
    if !installed {
        return Telemetry { provider: None };
    }
    if provider.is_some() {
        gatehouse_data_plane::trace_context::set_exporter(|span, parent| {
            use gatehouse_data_plane::trace_context::SpanIds;
            let parent = parent.map(|p| (p.trace_id, p.span_id, p.sampled));
            exported_ids(span, parent).map(|(trace_id, span_id, sampled)| SpanIds {
                trace_id,
                span_id,
                sampled,
            })
        });
        gatehouse_control_plane::metrics::trace_context::set_exporter(|span, parent| {
            use gatehouse_control_plane::metrics::trace_context::SpanIds;
            let parent = parent.map(|p| (p.trace_id, p.span_id, p.sampled));
            exported_ids(span, parent).map(|(trace_id, span_id, sampled)| SpanIds {
                trace_id,
                span_id,
                sampled,
            })
        });
        tracing::info!(target: "gatehouse::telemetry", "exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// The tracer provider when export is configured.
fn exporting(telemetry: &TelemetryConfig, planes: Planes) -> Result<Option<SdkTracerProvider>, String> {
    let configured = telemetry.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty());
    let from_env = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()));
    if configured.is_none() && !from_env {
        return Ok(None);
    }
    // Like OTEL_EXPORTER_OTLP_ENDPOINT, the configured URL is the receiver's base.
    let endpoint = configured.map(|base| format!("{}/v1/traces", base.trim().trim_end_matches('/')));
    let processor = |service: &'static str| -> Result<BatchSpanProcessor, String> {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(Duration::from_secs(10));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let exporter = builder.build().map_err(|e| e.to_string())?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&Resource::builder().with_service_name(service).build());
        Ok(processor)
    };
    let by_plane = ByPlane {
        data: planes.data.then(|| processor(DATA_PLANE_SERVICE)).transpose()?,
        control: planes.control.then(|| processor(CONTROL_PLANE_SERVICE)).transpose()?,
    };
    Ok(Some(SdkTracerProvider::builder().with_span_processor(by_plane).build()))
}

/// Gives `span` the remote `parent` (trace id, span id, sampled) and returns
/// the ids the exporter gave it.
fn exported_ids(span: &tracing::Span, parent: Option<(u128, u64, bool)>) -> Option<(u128, u64, bool)> {
    if let Some((trace_id, span_id, sampled)) = parent {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    ids.is_valid().then(|| {
        (
            u128::from_be_bytes(ids.trace_id().to_bytes()),
            u64::from_be_bytes(ids.span_id().to_bytes()),
            ids.is_sampled(),
        )
    })
}

/// Sends each finished span to its plane's exporter, so one process running
/// both planes (`gatehouse up`) still exports each under its own service name.
/// A span belongs to the control plane when its target (module path) is in
/// `gatehouse_control_plane`; every other span to the data plane, or to the
/// only plane this process runs.
#[derive(Debug)]
struct ByPlane {
    data: Option<BatchSpanProcessor>,
    control: Option<BatchSpanProcessor>,
}

impl ByPlane {
    fn each(&self, mut f: impl FnMut(&BatchSpanProcessor) -> OTelSdkResult) -> OTelSdkResult {
        let mut result = Ok(());
        for processor in [&self.data, &self.control].into_iter().flatten() {
            if let Err(err) = f(processor) {
                result = Err(err);
            }
        }
        result
    }
}

impl SpanProcessor for ByPlane {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let control = span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "target" && kv.value.as_str().starts_with("gatehouse_control_plane"));
        let processor = match (&self.data, &self.control) {
            (_, Some(control_plane)) if control => control_plane,
            (Some(data_plane), _) => data_plane,
            (None, Some(control_plane)) => control_plane,
            (None, None) => return,
        };
        processor.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.each(|p| p.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.each(|p| p.shutdown_with_timeout(timeout))
    }

    // Each plane's processor keeps the resource (service name) it was given.
    fn set_resource(&mut self, _resource: &Resource) {}
}
