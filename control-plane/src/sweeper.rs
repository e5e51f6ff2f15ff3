//! The sweeper: a background task that deletes what expired, once a minute.
//!
//! Expiry is enforced where each value is used (a flow, code or token past its
//! time is refused whether or not its row still exists); the sweeper only keeps
//! the tables small, so nothing half-finished grows without bound. Flows go
//! with the connections they still hold, so upstream tokens of abandoned flows
//! do not linger in the vault. Grants that ended, and anonymous identities
//! nothing refers to any more, go [`ENDED_GRACE`] later; the connections of
//! such identities are revoked at their provider as they go. Audit events go
//! after `audit_retention_days`. Every replica sweeps; the deletes are idempotent.

use std::sync::Arc;
use std::time::Duration;

use crate::Core;
use crate::connections::{self, ConnectError};
use crate::periodic::Periodic;
use crate::store::StoreError;

/// How often the sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How long a grant stays after it ended (revoked or idle-expired), and how old
/// an anonymous identity must be before it may go. Security: a margin over
/// every lifetime involved in finishing a flow and over clock skew between
/// replicas, so a row some request is still working with is never swept
/// under it; what it keeps meanwhile can no longer be used.
pub const ENDED_GRACE: i64 = 24 * 60 * 60;

/// Connections of abandoned identities deleted (and revoked upstream) per
/// sweep at most; the rest wait for the next sweep.
const CONNECTION_BATCH: i64 = 100;

/// The audit actor of what the sweeper does.
const ACTOR: &str = "system:sweeper";

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
    /// Grants that ended more than [`ENDED_GRACE`] ago.
    pub grants: u64,
    /// Abandoned anonymous identities.
    pub identities: u64,
    /// Client approvals of identities that no longer exist.
    pub approved_clients: u64,
    /// Connections of abandoned anonymous identities (revoked upstream first).
    pub connections: u64,
    /// Audit events past their retention.
    pub audit_events: u64,
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
            + self.grants
            + self.identities
            + self.approved_clients
            + self.connections
            + self.audit_events
    }
}

/// Deletes every row that expired before `now`: flows (with the connections
/// they still hold), upstream attempts, codes, access and refresh tokens,
/// connect links, unused dynamic registrations that lapsed and metadata
/// documents past their cache lifetime; grants that ended and anonymous
/// identities abandoned more than [`ENDED_GRACE`] ago, with their approvals and
/// connections (revoked at the provider); audit events past their retention.
pub async fn sweep_once(core: &Core, now: i64) -> Result<SweepReport, StoreError> {
    // Order: expired flows and codes first, then ended grants, so an identity
    // they were the last to name is abandoned within the same sweep.
    let (flows, upstream_attempts) = core.store.delete_expired_flows(now).await?;
    let grant_rows = core.store.delete_expired_grant_rows(now).await?;
    let clients = core.store.delete_expired_clients(now).await?;
    let cutoff = now - ENDED_GRACE;
    let grants = core.store.delete_ended_grants(cutoff, now).await?;
    let connections = delete_abandoned_connections(core, cutoff, now).await?;
    let abandoned = core.store.delete_abandoned_anonymous_identities(cutoff, now).await?;
    let audit_events = match i64::from(core.config.audit_retention_days) {
        0 => 0,
        days => core.store.delete_audit_before((now - days * 24 * 60 * 60) * 1000).await?,
    };
    Ok(SweepReport {
        flows,
        upstream_attempts,
        auth_codes: grant_rows.auth_codes,
        access_tokens: grant_rows.access_tokens,
        refresh_tokens: grant_rows.refresh_tokens,
        connect_links: grant_rows.connect_links,
        clients,
        grants,
        identities: abandoned.identities,
        approved_clients: abandoned.approved_clients,
        connections,
        audit_events,
    })
}

/// Deletes the connections of abandoned anonymous identities the way an
/// administrator's delete does: the tokens are revoked at the provider (best
/// effort), then the row goes. Returns how many went.
async fn delete_abandoned_connections(core: &Core, cutoff: i64, now: i64) -> Result<u64, StoreError> {
    let rows = core
        .store
        .abandoned_anonymous_connections(cutoff, now, CONNECTION_BATCH)
        .await?;
    let mut deleted = 0;
    for row in rows {
        match connections::delete(core, &row.id, ACTOR, "").await {
            Ok(Some(_)) => deleted += 1,
            // Another replica's sweep took it first.
            Ok(None) => {}
            Err(ConnectError::Store(err)) => return Err(err),
            Err(err) => {
                tracing::warn!(target: "gatehouse::sweeper", connection = %row.id, error = %err, "abandoned connection not deleted; retrying next sweep")
            }
        }
    }
    Ok(deleted)
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
