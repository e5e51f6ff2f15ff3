//! The sweeper: a background task that deletes what expired, once a minute.
//!
//! Expiry is enforced where each value is used (a flow, code or token past its
//! time is refused whether or not its row still exists); the sweeper only keeps
//! the tables small. Flows go with the connections they still hold, so upstream
//! tokens of abandoned flows do not linger in the vault. Every replica sweeps;
//! the deletes are idempotent.

use std::sync::Arc;
use std::time::Duration;

use crate::Core;
use crate::periodic::Periodic;
use crate::store::StoreError;

/// How often the sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub flows: u64,
    pub upstream_attempts: u64,
    pub auth_codes: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub connect_links: u64,
    pub clients: u64,
}

impl SweepReport {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.flows
            + self.upstream_attempts
            + self.auth_codes
            + self.access_tokens
            + self.refresh_tokens
            + self.connect_links
            + self.clients
    }
}

/// Deletes every row that expired before `now`: flows (with the connections
/// they still hold), upstream attempts, codes, access and refresh tokens,
/// connect links, unused dynamic registrations that lapsed and metadata
/// documents past their cache lifetime.
pub async fn sweep_once(core: &Core, now: i64) -> Result<SweepReport, StoreError> {
    let (flows, upstream_attempts) = core.store.delete_expired_flows(now).await?;
    let grant_rows = core.store.delete_expired_grant_rows(now).await?;
    let clients = core.store.delete_expired_clients(now).await?;
    Ok(SweepReport {
        flows,
        upstream_attempts,
        auth_codes: grant_rows.auth_codes,
        access_tokens: grant_rows.access_tokens,
        refresh_tokens: grant_rows.refresh_tokens,
        connect_links: grant_rows.connect_links,
        clients,
    })
}

/// Starts sweeping every [`SWEEP_INTERVAL`], the first time one interval from now.
pub fn start(core: Arc<Core>) -> Periodic {
    Periodic::start(SWEEP_INTERVAL, move || {
        let core = core.clone();
        async move {
            match sweep_once(&core, core.now()).await {
                Ok(report) if report.total() > 0 => {
                    tracing::debug!(target: "gatehouse::sweeper", ?report, "expired rows deleted");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(target: "gatehouse::sweeper", error = %err, "sweep failed; retrying next interval"),
            }
        }
    })
}
