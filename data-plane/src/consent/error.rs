//! `PageError`: every refusal on a consent page or at `/authorize`, rendered as
//! the error page with the status of docs/consent-flow.md's table and a way
//! back (a link to the flow when it can still go on, else `error.html`'s
//! sentence sending the person back to their application). The one place
//! that maps a control-plane refusal to a page.

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
    /// A continuation link whose signature does not match this flow and browser.
    BadContinuation,
    /// A provider's callback named an attempt (a connection or a sign-in) that
    /// expired (`ErrorReason::Expired`) or was used, while the flow it belongs
    /// to goes on: the page leads back to `back`, the flow's page, to try again.
    AttemptEnded { expired: bool, back: String },
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
    /// flow can go on (a link back makes sense). A page without a link back
    /// tells the person to start again from their application (`error.html`).
    fn describe(&self) -> (StatusCode, &'static str, &'static str, Option<String>, bool) {
        use PageErrorKind as K;
        const UNKNOWN: &str = "Gatehouse does not know this request, or it has ended.";
        match &self.kind {
            K::NoFlowCookie => (
                StatusCode::FORBIDDEN,
                "This request belongs to another browser",
                "Your browser did not send the cookie of this request: cookies may be blocked, the request may have expired, or it was started in another browser.",
                None,
                false,
            ),
            K::BadContinuation => (
                StatusCode::FORBIDDEN,
                "This link does not belong to this request",
                "The link was not made for this request in this browser, so Gatehouse does not follow it. Nothing was sent anywhere.",
                None,
                true,
            ),
            K::AttemptEnded { expired: true, .. } => (
                StatusCode::GONE,
                "This attempt has expired",
                "The sign-in page of the service stayed open too long, so Gatehouse no longer accepts its answer. Your request is still open: go back to it and try again.",
                None,
                true,
            ),
            K::AttemptEnded { expired: false, .. } => (
                StatusCode::CONFLICT,
                "This answer was already received",
                "This answer from the service was already used once, so it cannot be used again. Your request is still open: go back to it and try again.",
                None,
                true,
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
            K::UnknownFlow => (StatusCode::NOT_FOUND, "Request not found", UNKNOWN, None, false),
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
                    ErrorReason::NotFound => (StatusCode::NOT_FOUND, "Request not found", UNKNOWN, None, false),
                    // The control plane says how long a request lasts (its configured lifetime).
                    ErrorReason::Expired => (
                        StatusCode::GONE,
                        "This request has expired",
                        "It can no longer go on.",
                        detail,
                        false,
                    ),
                    ErrorReason::AlreadyUsed => (
                        StatusCode::CONFLICT,
                        "This request was already answered",
                        "It was approved or denied already, so it cannot change any more.",
                        None,
                        false,
                    ),
                    ErrorReason::WrongBrowser => (
                        StatusCode::FORBIDDEN,
                        "This request belongs to another browser",
                        "Only the browser that started it can continue it.",
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
                        "Gatehouse does not know this application or where it wants to be sent back to, so it will not send you there. If it keeps happening, tell the application's developer.",
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
        let back_link = match (&self.kind, &self.flow_id, can_continue) {
            (PageErrorKind::AttemptEnded { back, .. }, ..) => Some(back.clone()),
            (_, Some(flow_id), true) => Some(format!("/consent/{flow_id}")),
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
        assert_eq!(PageError::new(PageErrorKind::BadContinuation).into_response().status(), 403);
        let ended = |expired| PageErrorKind::AttemptEnded {
            expired,
            back: "/consent/flw_1/services".into(),
        };
        assert_eq!(PageError::new(ended(true)).into_response().status(), 410);
        assert_eq!(PageError::new(ended(false)).into_response().status(), 409);
    }

    async fn page_text(err: PageError) -> String {
        let body = axum::body::to_bytes(err.into_response().into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_error_page_offers_a_way_back() {
        // A flow that goes on: a link to it.
        let html = page_text(refused(ErrorReason::OutOfOrder)).await;
        assert!(html.contains(r#"href="/consent/flw_1""#), "{html}");
        // An attempt that ended in a live flow: a link to the flow's page.
        let ended = PageError::new(PageErrorKind::AttemptEnded {
            expired: true,
            back: "/consent/flw_1/services".into(),
        })
        .in_flow("flw_1");
        assert!(page_text(ended).await.contains(r#"href="/consent/flw_1/services""#));
        // Nothing to go back to: start again from the application, never "close this page" alone.
        for err in [
            refused(ErrorReason::Expired),
            refused(ErrorReason::AlreadyUsed),
            PageError::new(PageErrorKind::NoFlowCookie),
            PageError::bad_request("no flow known"),
            PageError::from(CpError::Internal),
        ] {
            let html = page_text(err.clone()).await;
            assert!(!html.contains("href=\"/consent/"), "{err:?}: {html}");
            assert!(html.contains("Return to your application and start again"), "{err:?}: {html}");
        }
    }

    #[tokio::test]
    async fn an_expired_request_says_how_long_requests_last_as_the_control_plane_said() {
        let html = page_text(PageError::from(CpError::Refused {
            reason: ErrorReason::Expired,
            description: "a request must be finished within 2 minutes".into(),
        }))
        .await;
        assert!(html.contains("within 2 minutes"), "{html}");
        assert!(!html.contains("15 minutes"));
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
