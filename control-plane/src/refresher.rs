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

use crate::Core;
use crate::credentials::{self, REFRESH_AHEAD_SECONDS};
use crate::periodic::Periodic;
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
    let now = core.now();
    let horizon = now + REFRESH_AHEAD_SECONDS + REFRESH_INTERVAL.as_secs() as i64 * 2;
    let due = core.store.connections_due_for_refresh(now, horizon, BATCH).await?;
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

/// Starts a round every [`REFRESH_INTERVAL`], the first one interval from now.
pub fn start(core: Arc<Core>) -> Periodic {
    Periodic::start(REFRESH_INTERVAL, move || {
        let core = core.clone();
        async move {
            match refresh_due_once(&core).await {
                Ok(report) if report.due > 0 => {
                    tracing::debug!(target: "gatehouse::refresher", ?report, "refreshed ahead of expiry")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(target: "gatehouse::refresher", error = %err, "finding tokens to refresh failed; retrying next interval")
                }
            }
        }
    })
}
