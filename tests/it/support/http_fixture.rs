//! A scripted HTTP server on 127.0.0.1:0 for what the control plane fetches
//! (Client ID Metadata Documents, protected-resource and authorization-server
//! metadata): each path answers what the script says, including the hostile
//! answers (arbitrary bytes, no answer at all), and every
//! request's path is recorded.

use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// What a path answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON text, `Cache-Control: no-store` (so nothing is cached by accident).
    Json(String),
    /// 200 with these bytes as `application/json`, `no-store`.
    Bytes(Vec<u8>),
    /// Never answers: the connection stays open without a status line.
    Hang,
    /// 404.
    NotFound,
}

type Script = dyn Fn(&str, &str) -> Reply + Send + Sync;

/// A running scripted server; stops on drop.
pub struct HttpFixture {
    /// `http://127.0.0.1:port`.
    pub base: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpFixture {
    /// Serves `script(base, path)` for every request.
    pub async fn start(script: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fixture");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let (b, r) = (base.clone(), requests.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (base, requests, script) = (b.clone(), r.clone(), script.clone());
            async move {
                let path = uri.path().to_owned();
                requests.lock().expect("requests").push(path.clone());
                match script(&base, &path) {
                    Reply::Json(text) => json(text.into_bytes()),
                    Reply::Bytes(bytes) => json(bytes),
                    Reply::Hang => std::future::pending::<Response>().await,
                    Reply::NotFound => (StatusCode::NOT_FOUND, "not here").into_response(),
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, requests, task }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every path requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

fn json(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}
