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
