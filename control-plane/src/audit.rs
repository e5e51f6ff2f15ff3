//! Recording audit events. Every admin action, flow step, token issue/refresh/
//! revoke and connection change is recorded: who, what, when, from where.
//! A failure to record is logged, never shown to the caller, and never blocks
//! the action (the action already happened).

use crate::Core;
use crate::store::audit::NewAuditEvent;

/// Records one event.
pub async fn record(core: &Core, event: NewAuditEvent<'_>) {
    crate::metrics::audited(event.action);
    let action = event.action.to_string();
    if let Err(err) = core.store.append_audit(event, core.clock.now_ms()).await {
        tracing::error!(target: "gatehouse::audit", action, error = %err, "could not record audit event");
    }
}
