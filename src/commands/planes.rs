//! `gatehouse control-plane` and `gatehouse data-plane`: one plane per process,
//! for a split deployment.

use std::sync::Arc;

use gatehouse_control_plane::ControlPlane;
use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::metrics;
use gatehouse_data_plane::DataPlane;

use super::{bind, shutdown_signal};
use crate::config::Config;

/// Runs a control plane until a shutdown signal.
pub async fn run_control_plane(config: Config) -> anyhow::Result<()> {
    if config.control_plane.callers.is_empty() {
        anyhow::bail!("no [[control_plane.callers]] configured: nobody could call this control plane");
    }
    let listener = bind(config.control_plane.listen, "gRPC").await?;
    let metrics = match config.control_plane.metrics_listen {
        Some(addr) => Some(metrics::serve(bind(addr, "metrics").await?)?),
        None => None,
    };
    let plane = ControlPlane::start(config.control_plane, listener, Arc::new(SystemClock)).await?;
    let stop = shutdown_signal();
    println!("Gatehouse control plane: gRPC on {}", plane.local_addr());
    if let Some(metrics) = &metrics {
        println!("Gatehouse control plane: metrics on http://{}/metrics", metrics.local_addr());
    }
    stop.await;
    plane.shutdown().await;
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    Ok(())
}

/// Runs a data plane until a shutdown signal.
pub async fn run_data_plane(config: Config) -> anyhow::Result<()> {
    let listener = bind(config.data_plane.listen, "HTTP").await?;
    let public_url = config.public_url().to_string();
    let plane = DataPlane::start(config.data_plane, listener).await?;
    let stop = shutdown_signal();
    println!(
        "Gatehouse data plane: HTTP on {} (public URL {public_url}, MCP URL {public_url}/mcp)",
        plane.local_addr()
    );
    stop.await;
    plane.shutdown().await;
    Ok(())
}
