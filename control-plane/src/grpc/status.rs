//! Domain errors → gRPC statuses. Every refusal carries an `ErrorDetail` with a
//! machine-readable reason in the status details; callers decide on the reason,
//! never on message text. Unexpected failures are logged once here, under an
//! error id, and answered with a bland INTERNAL.

use prost::Message as _;
use tonic::codegen::Bytes;
use tonic::{Code, Status};

use crate::clients::ClientError;
use crate::flows::FlowError;
use crate::grants::GrantError;
use crate::mcp_servers::{McpServerError, RegistryError};
use crate::pb::{AnyDetail, ErrorDetail, ErrorReason, StatusDetails};

/// The type URL of an `ErrorDetail` inside `StatusDetails`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/gatehouse.v1.ErrorDetail";
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
    // Order: the ErrorDetail goes inside a google.rpc.Status-shaped message, as
    // gRPC tools expect of this header (grpcurl would otherwise misread it).
    let details = StatusDetails {
        code: code as i32,
        message: description.clone(),
        details: vec![AnyDetail {
            type_url: ERROR_DETAIL_TYPE_URL.to_string(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, description, Bytes::from(details.encode_to_vec()))
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

impl From<ClientError> for Status {
    fn from(err: ClientError) -> Self {
        let text = err.to_string();
        match err {
            ClientError::InvalidRedirectUri(_) => refusal(Code::InvalidArgument, ErrorReason::InvalidRedirectUri, text),
            ClientError::InvalidMetadata(_) => refusal(Code::InvalidArgument, ErrorReason::InvalidClientMetadata, text),
            ClientError::NotFound => refusal(Code::NotFound, ErrorReason::InvalidClient, text),
            ClientError::MetadataDocument { .. } => refusal(Code::FailedPrecondition, ErrorReason::InvalidClient, text),
            ClientError::AuthenticationFailed => refusal(Code::Unauthenticated, ErrorReason::InvalidClient, text),
            ClientError::Store(e) => e.into(),
        }
    }
}

impl From<FlowError> for Status {
    fn from(err: FlowError) -> Self {
        let text = err.to_string();
        match err {
            FlowError::NotFound => refusal(Code::NotFound, ErrorReason::NotFound, text),
            FlowError::Expired { .. } => refusal(Code::FailedPrecondition, ErrorReason::Expired, text),
            FlowError::AlreadyConsumed => refusal(Code::FailedPrecondition, ErrorReason::AlreadyUsed, text),
            FlowError::WrongBrowser => refusal(Code::PermissionDenied, ErrorReason::WrongBrowser, text),
            FlowError::OutOfOrder(_) => refusal(Code::FailedPrecondition, ErrorReason::OutOfOrder, text),
            FlowError::Client(e) => e.into(),
            FlowError::InvalidRedirectUri => refusal(Code::InvalidArgument, ErrorReason::InvalidRedirectUri, text),
            FlowError::InvalidVirtualKey => refusal(Code::Unauthenticated, ErrorReason::InvalidVirtualKey, text),
            FlowError::Denied(_) => refusal(Code::PermissionDenied, ErrorReason::Denied, text),
            FlowError::InvalidRequest(_) => refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, text),
            FlowError::Vault(e) => e.into(),
            FlowError::Store(e) => e.into(),
        }
    }
}

impl From<GrantError> for Status {
    fn from(err: GrantError) -> Self {
        let text = err.to_string();
        match err {
            GrantError::InvalidClient => refusal(Code::Unauthenticated, ErrorReason::InvalidClient, text),
            GrantError::InvalidGrant(_) => refusal(Code::InvalidArgument, ErrorReason::InvalidGrant, text),
            GrantError::InvalidRequest(_) => refusal(Code::InvalidArgument, ErrorReason::InvalidRequest, text),
            GrantError::InvalidScope => refusal(Code::InvalidArgument, ErrorReason::InvalidScope, text),
            GrantError::InvalidTarget => refusal(Code::InvalidArgument, ErrorReason::InvalidTarget, text),
            GrantError::UnauthorizedClient(_) => refusal(Code::PermissionDenied, ErrorReason::UnauthorizedClient, text),
            GrantError::InvalidAccessToken => refusal(Code::Unauthenticated, ErrorReason::InvalidGrant, text),
            GrantError::Store(e) => e.into(),
        }
    }
}
