//! Pending consent flows: opening one at `/authorize`, proving the browser at
//! every later step, and the rules of which step may follow which.
//!
//! Security: a flow is bound to the browser that opened it by a 256-bit secret
//! (the flow cookie); only its SHA-256 is stored, and every step compares the
//! hash of the presented secret in constant time. A flow is consumed exactly
//! once (approve or deny).

use crate::Core;
use crate::secret::{self, Secret};
use crate::store::StoreError;
use crate::store::flows::FlowRow;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no such consent flow")]
    NotFound,
    #[error("this consent flow has expired; start again from the application")]
    Expired,
    #[error("this consent flow was already completed")]
    AlreadyConsumed,
    #[error("this consent flow belongs to another browser window; start again from the application")]
    WrongBrowser,
    #[error("{0}")]
    OutOfOrder(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A flow whose browser has been proved, not consumed, not expired.
#[derive(Debug, Clone)]
pub struct OpenFlow {
    pub row: FlowRow,
}

/// Loads a flow for the browser presenting `browser_secret`.
pub async fn open(core: &Core, flow_id: &str, browser_secret: &Secret) -> Result<OpenFlow, FlowError> {
    let row = core.store.get_flow(flow_id).await?.ok_or(FlowError::NotFound)?;
    // Security: the browser is proved before anything about the flow is revealed
    // (expired or consumed), so another browser learns nothing from the answer.
    if !secret::constant_time_eq(row.browser_secret_hash.as_bytes(), browser_secret.hash().as_bytes()) {
        tracing::warn!(target: "gatehouse::security", reason = "flow cookie does not match", flow_id, "consent step refused");
        return Err(FlowError::WrongBrowser);
    }
    if row.consumed_at.is_some() {
        return Err(FlowError::AlreadyConsumed);
    }
    if row.expires_at <= core.now() {
        return Err(FlowError::Expired);
    }
    Ok(OpenFlow { row })
}
