//! `PageError`: every refusal on a consent page or at `/authorize`, rendered as
//! the error page with the status of docs/consent-flow.md's table and a way
//! back (a link to the flow when it can still go on, else a sentence sending
//! the person back to their application). The one place that maps a
//! control-plane refusal to a page.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::views::{ErrorView, Page};
use crate::cp_client::CpError;
use crate::oauth::error::RETRY_AFTER_SECONDS;
use crate::pb::ErrorReason;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageErrorKind {
    /// No well-formed flow cookie came with the request.
    NoFlowCookie,
    /// The CSRF field is missing or does not match the flow and cookie.
    Csrf,
    /// The request is malformed (a duplicated parameter, a missing field).
    BadRequest(String),
    /// The flow id in the path cannot be one the control plane issued.
    UnknownFlow,
    /// The control plane refused or failed.
    ControlPlane(CpError),
}

/// A page-level error, with the flow it happened in when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageError {
    pub(crate) kind: PageErrorKind,
    pub(crate) flow_id: Option<String>,
}

impl PageError {
    pub(crate) fn new(kind: PageErrorKind) -> Self {
        Self { kind, flow_id: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(PageErrorKind::BadRequest(message.into()))
    }

    /// Names the flow, so the page can link back to it.
    pub(crate) fn in_flow(mut self, flow_id: &str) -> Self {
        self.flow_id = Some(flow_id.to_owned());
        self
    }

    /// The status, title, message, the detail safe to show, and whether the
    /// flow can go on (a link back makes sense).
    fn describe(&self) -> (StatusCode, &'static str, &'static str, Option<String>, bool) {
        use PageErrorKind as K;
        const START_AGAIN: &str = "Return to your application and connect again.";
        match &self.kind {
            K::NoFlowCookie => (
                StatusCode::FORBIDDEN,
                "This request belongs to another browser",
                "Your browser did not send the cookie of this request: cookies may be blocked, the request may have expired, or it was started in another browser. Return to your application and connect again.",
                None,
                false,
            ),
            K::Csrf => (
                StatusCode::FORBIDDEN,
                "The form could not be verified",
                "The form you sent does not belong to this request, or a newer request from this browser replaced it. Nothing was changed.",
                None,
                true,
            ),
            K::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "The request is not valid.",
                Some(message.clone()),
                true,
            ),
            K::UnknownFlow => (StatusCode::NOT_FOUND, "Request not found", START_AGAIN, None, false),
            K::ControlPlane(CpError::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Gatehouse is busy",
                "Gatehouse could not complete this step right now. Please try again in a moment.",
                None,
                true,
            ),
            K::ControlPlane(CpError::Internal) => (
                StatusCode::BAD_GATEWAY,
                "Something went wrong",
                "Gatehouse could not complete this step. Please try again; if it keeps failing, tell your administrator.",
                None,
                true,
            ),
            K::ControlPlane(CpError::Refused { reason, description }) => {
                let detail = (!description.is_empty()).then(|| description.clone());
                match reason {
                    ErrorReason::NotFound => (StatusCode::NOT_FOUND, "Request not found", START_AGAIN, None, false),
                    ErrorReason::Expired => (
                        StatusCode::GONE,
                        "This request has expired",
                        "Requests are valid for 15 minutes. Return to your application and connect again.",
                        None,
                        false,
                    ),
                    ErrorReason::AlreadyUsed => (
                        StatusCode::CONFLICT,
                        "This request was already answered",
                        "It was approved or denied already, so it cannot change any more. Return to your application.",
                        None,
                        false,
                    ),
                    ErrorReason::WrongBrowser => (
                        StatusCode::FORBIDDEN,
                        "This request belongs to another browser",
                        "Only the browser that started it can continue it. Return to your application and connect again from this browser.",
                        None,
                        false,
                    ),
                    ErrorReason::OutOfOrder => (
                        StatusCode::CONFLICT,
                        "One step was skipped",
                        "Continue with the step this request is at.",
                        detail,
                        true,
                    ),
                    ErrorReason::InvalidVirtualKey => (
                        StatusCode::UNAUTHORIZED,
                        "Virtual key not accepted",
                        "The virtual key is unknown or revoked.",
                        None,
                        true,
                    ),
                    ErrorReason::Denied => (
                        StatusCode::FORBIDDEN,
                        "Not allowed",
                        "Gatehouse does not allow this step.",
                        detail,
                        true,
                    ),
                    ErrorReason::RateLimited => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many requests",
                        "Please wait a moment and try again.",
                        None,
                        true,
                    ),
                    ErrorReason::UpstreamUnavailable => (
                        StatusCode::BAD_GATEWAY,
                        "The service did not answer",
                        "The service's sign-in server could not be reached. Please try again later.",
                        detail,
                        true,
                    ),
                    ErrorReason::InvalidClient | ErrorReason::InvalidRedirectUri => (
                        StatusCode::BAD_REQUEST,
                        "The application's request is invalid",
                        "Gatehouse does not know this application or where it wants to be sent back to, so it will not send you there. Tell the application's developer.",
                        detail,
                        false,
                    ),
                    _ => (
                        StatusCode::BAD_REQUEST,
                        "Invalid request",
                        "The request is not valid.",
                        detail,
                        true,
                    ),
                }
            }
        }
    }
}

impl From<CpError> for PageError {
    fn from(err: CpError) -> Self {
        Self::new(PageErrorKind::ControlPlane(err))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message, detail, can_continue) = self.describe();
        match &self.kind {
            PageErrorKind::Csrf => {
                tracing::info!(target: "gatehouse::security", reason = "csrf_mismatch", flow_id = self.flow_id.as_deref(), "consent form refused");
            }
            PageErrorKind::ControlPlane(CpError::Refused {
                reason: ErrorReason::WrongBrowser,
                ..
            }) => {
                tracing::info!(target: "gatehouse::security", reason = "wrong_browser", flow_id = self.flow_id.as_deref(), "flow used from another browser");
            }
            _ => {}
        }
        let back_link = match (&self.flow_id, can_continue) {
            (Some(flow_id), true) => Some(format!("/consent/{flow_id}")),
            _ => None,
        };
        let view = ErrorView {
            title: title.to_owned(),
            message: message.to_owned(),
            detail,
            back_link,
        };
        let mut response = Page::new(view, status).into_response();
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: ErrorReason) -> PageError {
        PageError::from(CpError::Refused {
            reason,
            description: "described".into(),
        })
        .in_flow("flw_1")
    }

    #[test]
    fn refusals_map_to_the_statuses_of_the_design() {
        let cases = [
            (ErrorReason::NotFound, 404),
            (ErrorReason::Expired, 410),
            (ErrorReason::AlreadyUsed, 409),
            (ErrorReason::OutOfOrder, 409),
            (ErrorReason::WrongBrowser, 403),
            (ErrorReason::InvalidVirtualKey, 401),
            (ErrorReason::InvalidClient, 400),
            (ErrorReason::InvalidRedirectUri, 400),
            (ErrorReason::InvalidRequest, 400),
            (ErrorReason::InvalidScope, 400),
            (ErrorReason::RateLimited, 429),
        ];
        for (reason, status) in cases {
            assert_eq!(refused(reason).into_response().status().as_u16(), status, "{reason:?}");
        }
        assert_eq!(PageError::from(CpError::Unavailable).into_response().status(), 503);
        assert_eq!(PageError::from(CpError::Internal).into_response().status(), 502);
        assert_eq!(PageError::new(PageErrorKind::Csrf).into_response().status(), 403);
        assert_eq!(PageError::new(PageErrorKind::NoFlowCookie).into_response().status(), 403);
        assert_eq!(PageError::new(PageErrorKind::UnknownFlow).into_response().status(), 404);
        assert_eq!(PageError::bad_request("x").into_response().status(), 400);
    }

    #[test]
    fn a_flow_that_can_go_on_gets_a_link_back_and_a_finished_one_does_not() {
        let (.., can_continue) = refused(ErrorReason::OutOfOrder).describe();
        assert!(can_continue);
        for reason in [
            ErrorReason::Expired,
            ErrorReason::AlreadyUsed,
            ErrorReason::WrongBrowser,
            ErrorReason::NotFound,
        ] {
            let (.., can_continue) = refused(reason).describe();
            assert!(!can_continue, "{reason:?}");
        }
    }

    #[test]
    fn unavailable_pages_say_when_to_retry() {
        let response = PageError::from(CpError::Unavailable).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
    }
}
