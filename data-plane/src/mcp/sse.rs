//! Server-sent events, as far as the gateway reads them: splitting a byte
//! stream into events (each kept as its original bytes, so relaying copies
//! them unchanged) and reading an event's `data`.

use bytes::{Bytes, BytesMut};

/// Splits a stream of bytes into whole events.
#[derive(Debug, Default)]
pub(crate) struct EventSplitter {
    buffer: BytesMut,
}

impl EventSplitter {
    /// Adds bytes; returns every event completed by them, each with its
    /// terminating blank line.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buffer) {
            events.push(self.buffer.split_to(end).freeze());
        }
        events
    }

    /// What is left when the stream ends (an event without its blank line).
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        let rest = self.buffer.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// The end (exclusive) of the first complete event: after the first blank line.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buffer.len() {
        // A line ends at \n, \r\n or \r; an empty line ends the event.
        let line_end = buffer[i..].iter().position(|b| *b == b'\n' || *b == b'\r')? + i;
        let next = if buffer[line_end] == b'\r' && buffer.get(line_end + 1) == Some(&b'\n') {
            line_end + 2
        } else if buffer[line_end] == b'\r' && line_end + 1 == buffer.len() {
            // A lone \r at the end may still be followed by \n.
            return None;
        } else {
            line_end + 1
        };
        if line_end == i {
            return Some(next);
        }
        i = next;
    }
    None
}

/// The `data` of one event: its `data:` lines joined by `\n`; `None` without any.
pub(crate) fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            let data = data.get_or_insert_with(String::new);
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value);
        }
    }
    data.filter(|d| !d.is_empty())
}

/// Whether a JSON-RPC message is a response (a result or an error, no method).
pub(crate) fn is_response(message: &serde_json::Value) -> bool {
    message.get("method").is_none() && (message.get("result").is_some() || message.get("error").is_some())
}

/// An upstream's SSE reply as the 2026-07-28 wire allows it: the response
/// completed (`wire::complete_result`), no server-to-client requests (that
/// revision has none on any stream; Gatehouse could not answer them anyway),
/// and log messages only when the request asked for them with a log level.
///
/// The stream is read up to its first message before the client gets an
/// answer: when that message is the upstream asking the client for a
/// capability the request did not declare (sampling, elicitation, roots), the
/// client gets 400 with -32021 instead, and the upstream's call is dropped.
/// Events are then relayed as they arrive; closing the client's stream drops
/// the upstream's, which cancels the call there.
pub(crate) async fn modern_stream(
    response: axum::response::Response,
    method: &str,
    id: &str,
    modern: &super::wire::Modern,
) -> Result<axum::response::Response, super::error::McpError> {
    use tokio_stream::StreamExt as _;
    let (parts, body) = response.into_parts();
    let mut chunks = body.into_data_stream();
    let mut splitter = EventSplitter::default();
    let mut first = Vec::new();
    while !first.iter().any(|event: &Bytes| event_data(event).is_some()) {
        let Some(Ok(chunk)) = chunks.next().await else { break };
        first.extend(splitter.push(&chunk));
    }
    if let Some(capability) = first.iter().find_map(|event| undeclared_capability(event, modern)) {
        return Err(super::error::McpError::MissingCapability {
            id: id.to_owned(),
            capability: capability.to_owned(),
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let method = method.to_owned();
    let log_level = modern.log_level;
    tokio::spawn(async move {
        for event in first {
            if let Some(event) = modern_event(event, &method, log_level)
                && tx.send(Ok(event)).await.is_err()
            {
                return;
            }
        }
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { break };
            for event in splitter.push(&chunk) {
                if let Some(event) = modern_event(event, &method, log_level)
                    && tx.send(Ok(event)).await.is_err()
                {
                    return;
                }
            }
        }
        if let Some(event) = splitter.finish().and_then(|event| modern_event(event, &method, log_level)) {
            let _ = tx.send(Ok(event)).await;
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(axum::response::Response::from_parts(parts, body))
}

/// The client capability an upstream's server-to-client request needs, when
/// the request being served did not declare it.
fn undeclared_capability(event: &[u8], modern: &super::wire::Modern) -> Option<&'static str> {
    let message: serde_json::Value = serde_json::from_str(&event_data(event)?).ok()?;
    message.get("id")?;
    let needed = match message.get("method")?.as_str()? {
        "sampling/createMessage" => "sampling",
        "elicitation/create" => "elicitation",
        "roots/list" => "roots",
        _ => return None,
    };
    (!modern.capabilities.iter().any(|declared| declared == needed)).then_some(needed)
}

/// One event of [`modern_stream`]: kept, rewritten or dropped (`None`).
fn modern_event(event: Bytes, method: &str, log_level: bool) -> Option<Bytes> {
    let Some(data) = event_data(&event) else {
        return Some(event);
    };
    let Ok(message) = serde_json::from_str::<serde_json::Value>(&data) else {
        return Some(event);
    };
    if is_response(&message) {
        return Some(match super::wire::complete_result(method, data.as_bytes()) {
            Some(completed) => message_event(&completed),
            None => event,
        });
    }
    let kind = message.get("method").and_then(serde_json::Value::as_str);
    if message.get("id").is_some() {
        tracing::debug!(target: "gatehouse::mcp", method = kind.unwrap_or_default(), "dropped a server-to-client request on the 2026-07-28 wire");
        return None;
    }
    if kind == Some("notifications/message") && !log_level {
        return None;
    }
    Some(event)
}

/// One SSE event carrying `json` as its data.
pub(crate) fn message_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modern_wire_keeps_progress_completes_the_response_and_drops_requests_and_unasked_logs() {
        let progress = message_event(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#);
        assert_eq!(modern_event(progress.clone(), "tools/call", false), Some(progress));
        let request = message_event(br#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{}}"#);
        assert_eq!(modern_event(request, "tools/call", true), None);
        let log = message_event(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#);
        assert_eq!(modern_event(log.clone(), "tools/call", false), None);
        assert_eq!(modern_event(log.clone(), "tools/call", true), Some(log));
        let response = message_event(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
        let completed = modern_event(response, "tools/call", false).unwrap();
        let data = event_data(&completed).unwrap();
        let message: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(message["result"]["resultType"], "complete");
        let keep_alive = Bytes::from_static(b": keep-alive\n\n");
        let modern = crate::mcp::wire::Modern {
            version: "2026-07-28".into(),
            declared_capabilities: true,
            capabilities: vec!["elicitation".into()],
            url_elicitation: false,
            log_level: false,
        };
        let sampling = message_event(br#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}"#);
        assert_eq!(undeclared_capability(&sampling, &modern), Some("sampling"));
        let elicitation = message_event(br#"{"jsonrpc":"2.0","id":4,"method":"elicitation/create","params":{}}"#);
        assert_eq!(undeclared_capability(&elicitation, &modern), None, "declared");
        assert_eq!(modern_event(keep_alive.clone(), "tools/call", false), Some(keep_alive));
    }

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut splitter = EventSplitter::default();
        assert!(splitter.push(b"event: message\ndata: {\"a\"").is_empty());
        let events = splitter.push(b":1}\n\ndata: x\r\n\r\ndata: y\n");
        assert_eq!(events.len(), 2);
        assert_eq!(&events[0][..], b"event: message\ndata: {\"a\":1}\n\n");
        assert_eq!(event_data(&events[0]).as_deref(), Some("{\"a\":1}"));
        assert_eq!(event_data(&events[1]).as_deref(), Some("x"));
        assert_eq!(splitter.push(b"\n").len(), 1);
        assert!(splitter.finish().is_none());
        splitter.push(b"data: tail");
        assert_eq!(splitter.finish().as_deref(), Some(&b"data: tail"[..]));
    }

    #[test]
    fn data_lines_join_and_other_fields_are_ignored() {
        assert_eq!(event_data(b"id: 1\nretry: 5\ndata: a\ndata:b\n\n").as_deref(), Some("a\nb"));
        assert_eq!(event_data(b"id: 1\ndata:\n\n"), None, "a priming event carries nothing");
        assert_eq!(event_data(b": comment\n\n"), None);
    }

    #[test]
    fn responses_are_told_from_requests_and_notifications() {
        use serde_json::json;
        assert!(is_response(&json!({"jsonrpc":"2.0","id":1,"result":{}})));
        assert!(is_response(&json!({"jsonrpc":"2.0","id":1,"error":{"code":1}})));
        assert!(!is_response(
            &json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}})
        ));
        assert!(!is_response(&json!({"jsonrpc":"2.0","id":2,"method":"elicitation/create"})));
    }
}
