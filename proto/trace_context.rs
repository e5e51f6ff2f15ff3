//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>):
//! what a request's log lines and spans are correlated by. The data plane
//! accepts one from its client (or starts a trace) and sends one on every
//! control-plane call; the control plane continues it. Both planes include
//! this file (`#[path]`), so they parse and print the header the same way.
//!
//! Ids are made here (random) unless an exporter is installed
//! ([`set_exporter`]): then the exporter's own spans decide them, so the ids in
//! the log are the ids of the exported spans.

use std::sync::OnceLock;

/// The header and gRPC metadata key.
pub const TRACEPARENT: &str = "traceparent";

/// The ids of one span: the trace it belongs to and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// Never zero.
    pub trace_id: u128,
    /// Never zero.
    pub span_id: u64,
    /// Whether the trace is being recorded (the `sampled` flag).
    pub sampled: bool,
}

impl SpanIds {
    /// Parses a `traceparent` header (version `00`, or a later version read as
    /// `00`); `None` for anything malformed or with an all-zero id, which the
    /// recommendation says to ignore (a new trace is started instead).
    pub fn parse(header: &[u8]) -> Option<Self> {
        let header = std::str::from_utf8(header).ok()?.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        let rest_ok = match version {
            "00" => parts.next().is_none(),
            "ff" => false,
            _ => true,
        };
        let lower_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !rest_ok || !lower_hex(version, 2) || !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
        let span_id = u64::from_str_radix(span_id, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The ids of a new span: a child of `parent`, or the root of a new trace.
    pub fn child_of(parent: Option<&SpanIds>) -> Self {
        Self {
            trace_id: parent.map_or_else(|| nonzero(rand::random::<u128>()), |p| p.trace_id),
            span_id: nonzero(rand::random::<u64>()),
            sampled: parent.is_none_or(|p| p.sampled),
        }
    }
}

fn nonzero<T: PartialEq + From<u8>>(id: T) -> T {
    if id == T::from(0) { T::from(1) } else { id }
}

/// The trace id as log lines print it (32 lowercase hex digits).
pub struct TraceIdHex(pub u128);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The span id as log lines print it (16 lowercase hex digits).
pub struct SpanIdHex(pub u64);

impl std::fmt::Display for SpanIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Makes `span` a child of `parent` (a remote span) in an exporter's eyes and
/// returns the ids the exporter gave it; `None` when it keeps no ids for it.
pub type Exporter = fn(&tracing::Span, Option<&SpanIds>) -> Option<SpanIds>;

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Installs the exporter hook (once per process; the `gatehouse` binary does
/// this when OpenTelemetry export is configured).
pub fn set_exporter(exporter: Exporter) {
    let _ = EXPORTER.set(exporter);
}

/// Starts the trace of `span` (just created, not yet entered), continuing
/// `parent` when there is one, and records its ids in the span's `trace_id`
/// and `span_id` fields.
pub fn start(span: &tracing::Span, parent: Option<&SpanIds>) -> SpanIds {
    let ids = EXPORTER
        .get()
        .filter(|_| !span.is_disabled())
        .and_then(|export| export(span, parent))
        .unwrap_or_else(|| SpanIds::child_of(parent));
    span.record("trace_id", tracing::field::display(TraceIdHex(ids.trace_id)));
    span.record("span_id", tracing::field::display(SpanIdHex(ids.span_id)));
    ids
}

/// A request id fit for a log line and a label of nothing: at most 128
/// characters of `[A-Za-z0-9._:-]`. Anything else is replaced by the caller.
pub fn sane_request_id(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok { std::str::from_utf8(value).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_ignored() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ids = SpanIds::parse(header.as_bytes()).unwrap();
        assert_eq!(ids.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ids.span_id, 0x00f067aa0ba902b7);
        assert!(ids.sampled);
        assert_eq!(ids.traceparent(), header);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(SpanIds::parse(bad.as_bytes()), None, "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes";
        assert!(!SpanIds::parse(later.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let parent = SpanIds::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let child = SpanIds::child_of(Some(&parent));
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_ne!(SpanIds::child_of(None).trace_id, 0);
    }

    #[test]
    fn request_ids_with_odd_characters_are_refused() {
        assert_eq!(sane_request_id(b"0190a1b2-c3d4"), Some("0190a1b2-c3d4"));
        assert_eq!(sane_request_id(b"a\nb"), None);
        assert_eq!(sane_request_id(b"\"}"), None);
        assert_eq!(sane_request_id(&[b'a'; 129]), None);
        assert_eq!(sane_request_id(b""), None);
    }
}
