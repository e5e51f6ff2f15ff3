//! The `gatehouse` binary's library: configuration loading, the commands that
//! compose the planes (`up`, `control-plane`, `data-plane`, `vault rotate`),
//! the admin client and the demo upstream.

pub mod admin_client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod dev;
pub mod pb;
pub mod telemetry;
