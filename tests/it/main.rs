//! Gatehouse's end-to-end tests: one binary, real servers on port 0, a fresh
//! database per test (SQLite file, or a PostgreSQL schema).
//!
//! `TEST_LOG=1` shows the servers' logs. With `CI=true`, store tests fail when
//! PostgreSQL is unreachable instead of skipping it.

mod support;

mod admin;
mod admin_api;
mod browser;
mod cli;
mod code_binding;
mod consent_http;
mod events;
mod fleet;
mod gateway;
mod grpc_server;
mod interop;
mod keep_alive;
mod logs;
mod metrics;
mod oauth_core;
mod properties;
mod ratelimit;
mod refresh;
mod sdk_python;
mod sdk_typescript;
mod security;
mod store;
mod tidy;
mod up;
mod upstream_connect;
mod vault;
