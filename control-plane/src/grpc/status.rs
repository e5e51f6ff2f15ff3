//! Domain errors → gRPC statuses. Every refusal carries an `ErrorDetail` with a
//! machine-readable reason in the status details; callers decide on the reason,
//! never on message text. Unexpected failures are logged once here, under an
//! error id, and answered with a bland INTERNAL.

use prost::Message as _;
use tonic::codegen::Bytes;
use tonic::{Code, Status};

use crate::mcp_servers::{McpServerError, RegistryError};
use crate::pb::{ErrorDetail, ErrorReason};
use crate::secret;
use crate::store::StoreError;
use crate::vault::VaultError;
use crate::virtual_keys::VirtualKeyError;

/// A refusal with a reason the caller can act on.
pub fn refusal(code: Code, reason: ErrorReason, description: impl Into<String>) -> Status {
    let description = description.into();
    let detail = ErrorDetail {
        reason: reason as i32,
        description: description.clone(),
    };
    Status::with_details(code, description, Bytes::from(detail.encode_to_vec()))
}

/// An unexpected failure: logged with an id, answered as INTERNAL.
pub fn internal(err: &dyn std::fmt::Display) -> Status {
    let error_id = secret::random_id("err_");
    tracing::error!(target: "gatehouse::grpc", error_id, error = %err, "internal error");
    Status::internal(format!("internal error ({error_id})"))
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(target: "gatehouse::grpc", error = %err, "store unavailable");
                Status::unavailable("store unavailable, retry later")
            }
            _ => internal(&err),
        }
    }
}

impl From<VaultError> for Status {
    fn from(err: VaultError) -> Self {
        match err {
            VaultError::RotateNeedsKeyFile => Status::failed_precondition(err.to_string()),
            other => internal(&other),
        }
    }
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid(e @ McpServerError::AlreadyExists(_)) => {
                refusal(Code::AlreadyExists, ErrorReason::AlreadyExists, e.to_string())
            }
            RegistryError::Invalid(e @ McpServerError::NotFound(_)) => {
                refusal(Code::NotFound, ErrorReason::NotFound, e.to_string())
            }
            RegistryError::Invalid(e) => refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, e.to_string()),
            RegistryError::Store(e) => e.into(),
        }
    }
}

impl From<VirtualKeyError> for Status {
    fn from(err: VirtualKeyError) -> Self {
        match err {
            VirtualKeyError::InvalidName => refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, err.to_string()),
            VirtualKeyError::NotFound(_) => refusal(Code::NotFound, ErrorReason::NotFound, err.to_string()),
            VirtualKeyError::Store(e) => e.into(),
        }
    }
}
