//! Keep-alive connections stay usable after a refusal. An MCP client's first
//! POST to /mcp carries no token and is answered 401 before its body is read;
//! the client then reuses the connection for discovery. The data plane must
//! either keep that connection working or say `Connection: close`, never
//! drop it silently (which SDK clients report as "server disconnected").
//! The same holds for a body refused as too large (413).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::fleet::TestFleet;

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return Some(head);
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the data plane answers")
            .unwrap();
        if read == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// Unless `refused` (a response head) says `Connection: close`, the
/// connection must serve the next request; `what` names the refusal.
async fn usable_unless_closing(stream: &mut TcpStream, addr: &str, refused: &str, what: &str) {
    if refused.contains("connection: close") {
        return;
    }
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let next = read_response(stream).await;
    assert!(
        next.as_deref().is_some_and(|head| head.starts_with("http/1.1 200")),
        "{what}: the keep-alive connection was dropped without saying so: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_at_mcp_leaves_the_connection_usable_or_says_it_closes() {
    let fleet = TestFleet::start(1).await;
    let addr = fleet.url(0).trim_start_matches("http://").to_owned();
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    // The body a moment after the head, as a client writing them separately does.
    for pause in [Duration::ZERO, Duration::from_millis(50)] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(pause).await;
        stream.write_all(body).await.unwrap();
        let refused = read_response(&mut stream).await.expect("a response to the POST");
        assert!(refused.starts_with("http/1.1 401"), "{refused}");
        usable_unless_closing(&mut stream, &addr, &refused, &format!("after a {pause:?} pause, the 401")).await;
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_for_a_body_over_the_limit_leaves_the_connection_usable_or_says_it_closes() {
    let fleet = TestFleet::start(1).await;
    let addr = fleet.url(0).trim_start_matches("http://").to_owned();
    // A declared length one byte over the default limit (1 MiB), to a route
    // without a token check (/register) and to /mcp, whose refusal is
    // otherwise a 401. The limit answers on the declared length, so the body
    // is not sent: a server closing on unread bytes would reset the
    // connection and could take its own answer with it.
    let length = 1024 * 1024 + 1;
    for path in ["/register", "/mcp"] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let refused = read_response(&mut stream).await.expect("a response to the POST");
        assert!(refused.starts_with("http/1.1 413"), "{path}: {refused}");
        usable_unless_closing(&mut stream, &addr, &refused, &format!("{path}: the 413")).await;
    }
    fleet.stop().await;
}
