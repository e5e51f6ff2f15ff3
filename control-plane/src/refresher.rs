//! The background refresher: upstream access tokens are refreshed ahead of
//! their expiry, so a person's call rarely waits for a refresh.
//!
//! Every replica runs it; the refresh lease (`credentials`) makes sure one
//! connection is refreshed once however many replicas find it due. A transient
//! failure leaves the token in place and backs off; `invalid_grant` marks the
//! connection as needing the person again (shown in the pages and the admin
//! API); `invalid_client` also forgets a dynamic registration.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Core;
use crate::credentials::{self, REFRESH_AHEAD_SECONDS};
use crate::store::StoreError;

/// How often the refresher looks for tokens about to expire.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Connections refreshed per round at most (the rest wait for the next one).
const BATCH: i64 = 200;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Connections found due.
    pub due: usize,
    /// Of those, how many failed (transient or needing re-auth).
    pub failed: usize,
}

/// Refreshes every connection whose token expires before the next round
/// would come plus the usual margin.
pub async fn refresh_due_once(core: &Core) -> Result<RefreshReport, StoreError> {
    let horizon = core.now() + REFRESH_AHEAD_SECONDS + REFRESH_INTERVAL.as_secs() as i64 * 2;
    let due = core.store.connections_due_for_refresh(horizon, BATCH).await?;
    let mut report = RefreshReport {
        due: due.len(),
        failed: 0,
    };
    for row in &due {
        if let Err(err) = credentials::refresh_ahead(core, row).await {
            report.failed += 1;
            tracing::debug!(target: "gatehouse::refresher", connection = %row.id, service = %row.service, error = %err, "refresh ahead of expiry failed");
        }
    }
    Ok(report)
}

/// The running refresher. Dropping it stops the task.
pub struct Refresher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Refresher {
    /// Starts a round every [`REFRESH_INTERVAL`], the first one interval from now.
    pub fn start(core: Arc<Core>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_INTERVAL, REFRESH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        match refresh_due_once(&core).await {
                            Ok(report) if report.due > 0 => tracing::debug!(target: "gatehouse::refresher", ?report, "refreshed ahead of expiry"),
                            Ok(_) => {}
                            Err(err) => tracing::warn!(target: "gatehouse::refresher", error = %err, "finding tokens to refresh failed; retrying next interval"),
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the task, waiting for a round in progress.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
