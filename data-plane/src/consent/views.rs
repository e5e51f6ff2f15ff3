//! The page views: one struct per template in `templates/` (`identity.html`
//! pairs with `IdentityView`), built from the control plane's `FlowView`.
//! Askama escapes every value, so text from clients and upstreams (names,
//! URIs, account names) cannot inject markup.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::FormTargets;
use crate::pb::{Client, ConnectionStatus, FlowView, IdentityKind, ServiceStatus};

/// A rendered view with its status and the form targets its CSP allows.
pub(crate) struct Page<V> {
    view: V,
    status: StatusCode,
    targets: FormTargets,
}

impl<V> Page<V> {
    pub(crate) fn new(view: V, status: StatusCode) -> Self {
        Self {
            view,
            status,
            targets: FormTargets::default(),
        }
    }

    pub(crate) fn with_targets(mut self, targets: FormTargets) -> Self {
        self.targets = targets;
        self
    }
}

impl<V: IntoResponse> IntoResponse for Page<V> {
    fn into_response(self) -> Response {
        let mut response = self.view.into_response();
        // A template that failed to render keeps its 500.
        if !response.status().is_server_error() {
            *response.status_mut() = self.status;
        }
        response.extensions_mut().insert(self.targets);
        response
    }
}

/// Who is asking and where the answer goes: the top of both consent pages.
#[derive(Debug, Clone)]
pub(crate) struct ClientSummary {
    /// The client's name, or its id when it gave none.
    pub(crate) name: String,
    pub(crate) client_id: String,
    /// The host of the redirect URI, shown prominently (SPEC-NOTES §5.5 C2).
    pub(crate) redirect_host: String,
    pub(crate) redirect_uri: String,
    /// Every registered redirect URI is on this computer: any local program
    /// could claim to be this client (MCP 2025-11-25 "Localhost Redirect URI Risks").
    pub(crate) loopback_only: bool,
    /// The identity approved this client before.
    pub(crate) previously_approved: bool,
}

impl ClientSummary {
    fn new(flow: &FlowView) -> Self {
        let client = flow.client.clone().unwrap_or_default();
        let Client {
            client_id,
            client_name,
            redirect_uris,
            ..
        } = client;
        let name = if client_name.trim().is_empty() {
            client_id.clone()
        } else {
            client_name
        };
        let registered: Vec<&str> = if redirect_uris.is_empty() {
            vec![flow.redirect_uri.as_str()]
        } else {
            redirect_uris.iter().map(String::as_str).collect()
        };
        Self {
            name,
            client_id,
            redirect_host: redirect_host(&flow.redirect_uri),
            redirect_uri: flow.redirect_uri.clone(),
            loopback_only: registered.iter().all(|uri| is_loopback(uri)),
            previously_approved: flow.client_previously_approved,
        }
    }
}

/// The host a redirect URI sends the code to, or its scheme for a native
/// app's private-use URI without one.
pub(crate) fn redirect_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => format!("{}:", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

/// Whether `uri` is an http(s) URI of this computer (localhost, 127.0.0.0/8, ::1).
pub(crate) fn is_loopback(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else { return false };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost") || domain.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One requested scope, in words.
#[derive(Debug, Clone)]
pub(crate) struct ScopeLine {
    pub(crate) name: String,
    pub(crate) description: &'static str,
}

fn scope_lines(scopes: &[String]) -> Vec<ScopeLine> {
    let scopes: Vec<&str> = if scopes.is_empty() {
        vec!["mcp"]
    } else {
        scopes.iter().map(String::as_str).collect()
    };
    scopes
        .into_iter()
        .map(|name| ScopeLine {
            name: name.to_owned(),
            description: match name {
                "mcp" => "Use the services below through Gatehouse, as the identity you choose",
                "offline_access" => "Keep access while you are away (refresh tokens)",
                _ => "A permission Gatehouse does not describe",
            },
        })
        .collect()
}

/// `templates/identity.html`: who is asking, and as whom to answer.
#[derive(Template, WebTemplate)]
#[template(path = "identity.html")]
pub(crate) struct IdentityView {
    pub(crate) flow_id: String,
    pub(crate) csrf: String,
    pub(crate) client: ClientSummary,
    pub(crate) scopes: Vec<ScopeLine>,
    pub(crate) sign_in_available: bool,
    /// The user an authenticating proxy asserted, when configured and present.
    pub(crate) proxy_user: Option<String>,
    /// The identity chosen so far (when changing it).
    pub(crate) current_identity: Option<String>,
    /// Why the last attempt failed (a virtual key that was not accepted).
    pub(crate) error: Option<String>,
}

impl IdentityView {
    pub(crate) fn new(flow: &FlowView, csrf: String, proxy_user: Option<String>) -> Self {
        Self {
            flow_id: flow.flow_id.clone(),
            csrf,
            client: ClientSummary::new(flow),
            scopes: scope_lines(&flow.scopes),
            sign_in_available: flow.sign_in_available,
            proxy_user,
            current_identity: flow.identity.as_ref().map(identity_text),
            error: None,
        }
    }

    /// The page: 401 when it shows a refused virtual key (docs/consent-flow.md).
    /// Its Cancel form ends at the client's redirect URI.
    pub(crate) fn into_page(self) -> Page<Self> {
        let status = if self.error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        let targets = FormTargets::redirect_to(&self.client.redirect_uri);
        Page::new(self, status).with_targets(targets)
    }
}

fn identity_text(identity: &crate::pb::Identity) -> String {
    match IdentityKind::try_from(identity.kind) {
        Ok(IdentityKind::Anonymous) => "Anonymous (this application only)".to_owned(),
        Ok(IdentityKind::VirtualKey) => format!("Virtual key “{}”", identity.display_name),
        _ => identity.display_name.clone(),
    }
}

/// One service on the services page.
#[derive(Debug, Clone)]
pub(crate) struct ServiceRow {
    pub(crate) service: String,
    pub(crate) display_name: String,
    pub(crate) status_text: String,
    /// CSS modifier: `ok`, `warn`, `off` or `none`.
    pub(crate) status_class: &'static str,
    /// "Connect" or "Reconnect" when the service takes a connection.
    pub(crate) connect_label: Option<&'static str>,
    pub(crate) can_disconnect: bool,
    /// Upstream scopes connecting asks for.
    pub(crate) scopes: Vec<String>,
}

impl ServiceRow {
    fn new(status: &ServiceStatus) -> Self {
        let display_name = if status.display_name.is_empty() {
            status.service.clone()
        } else {
            status.display_name.clone()
        };
        let connection = status.connection.as_ref();
        let connection_status = connection
            .and_then(|c| ConnectionStatus::try_from(c.status).ok())
            .unwrap_or(ConnectionStatus::NotConnected);
        let account = connection.map(|c| c.account.as_str()).unwrap_or_default();
        let connected_as = if account.is_empty() {
            "Connected".to_owned()
        } else {
            format!("Connected as {account}")
        };
        let (status_text, status_class, connect_label, can_disconnect) = if !status.needs_connection {
            ("No connection needed".to_owned(), "none", None, false)
        } else {
            match connection_status {
                ConnectionStatus::Connected => (connected_as, "ok", Some("Reconnect"), true),
                ConnectionStatus::Expiring => (format!("{connected_as} · Expiring"), "warn", Some("Reconnect"), true),
                ConnectionStatus::NeedsReauth => ("Needs re-authorization".to_owned(), "warn", Some("Reconnect"), true),
                ConnectionStatus::NotConnected | ConnectionStatus::Unspecified => {
                    ("Not connected".to_owned(), "off", Some("Connect"), false)
                }
            }
        };
        Self {
            service: status.service.clone(),
            display_name,
            status_text,
            status_class,
            connect_label,
            can_disconnect,
            scopes: status.scopes.clone(),
        }
    }
}

/// `templates/services.html`: the chosen identity, its services, Approve and Deny.
#[derive(Template, WebTemplate)]
#[template(path = "services.html")]
pub(crate) struct ServicesView {
    pub(crate) flow_id: String,
    pub(crate) csrf: String,
    pub(crate) client: ClientSummary,
    pub(crate) scopes: Vec<ScopeLine>,
    pub(crate) identity: String,
    /// Skip was chosen: connections belong to this grant only.
    pub(crate) anonymous: bool,
    pub(crate) services: Vec<ServiceRow>,
    /// Shown once (for example why a connection failed).
    pub(crate) notice: Option<String>,
}

impl ServicesView {
    pub(crate) fn new(flow: &FlowView, csrf: String) -> Self {
        let anonymous = flow
            .identity
            .as_ref()
            .is_some_and(|identity| identity.kind == IdentityKind::Anonymous as i32);
        Self {
            flow_id: flow.flow_id.clone(),
            csrf,
            client: ClientSummary::new(flow),
            scopes: scope_lines(&flow.scopes),
            identity: flow
                .identity
                .as_ref()
                .map(identity_text)
                .unwrap_or_else(|| "No identity chosen".to_owned()),
            anonymous,
            services: flow.services.iter().map(ServiceRow::new).collect(),
            notice: (!flow.notice.is_empty()).then(|| flow.notice.clone()),
        }
    }

    /// The page; Approve and Deny end at the client's redirect URI.
    pub(crate) fn into_page(self) -> Page<Self> {
        let targets = FormTargets::redirect_to(&self.client.redirect_uri);
        Page::new(self, StatusCode::OK).with_targets(targets)
    }
}

/// `templates/error.html`.
#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub(crate) struct ErrorView {
    pub(crate) title: String,
    pub(crate) message: String,
    /// More detail, safe to show (the control plane's description).
    pub(crate) detail: Option<String>,
    /// Where to continue the flow, when it can go on.
    pub(crate) back_link: Option<String>,
}

/// `templates/redirect.html`: the continuation to an upstream or sign-in
/// provider. A Connect or sign-in post answers 303 to this page of our own
/// origin (a 303 straight to the provider would need `form-action` to list
/// every provider's origin); it leads on by meta refresh (no JavaScript) and
/// a visible link.
#[derive(Template, WebTemplate)]
#[template(path = "redirect.html")]
pub(crate) struct RedirectView {
    pub(crate) url: String,
    /// The provider's host, named in the link text.
    pub(crate) destination: String,
}

impl RedirectView {
    /// `None` unless `url` is an absolute http(s) URL (never `javascript:` or
    /// `data:` in a link, whatever the control plane said).
    pub(crate) fn new(url: String) -> Option<Self> {
        let parsed = url::Url::parse(&url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        let destination = parsed.host_str()?.to_owned();
        Some(Self { url, destination })
    }

    pub(crate) fn into_page(self) -> Page<Self> {
        Page::new(self, StatusCode::OK)
    }
}

/// `templates/done.html`: the end of a connection made outside a consent flow.
#[derive(Template, WebTemplate)]
#[template(path = "done.html")]
pub(crate) struct DoneView {
    pub(crate) title: String,
    pub(crate) message: String,
}

impl DoneView {
    pub(crate) fn into_page(self) -> Page<Self> {
        Page::new(self, StatusCode::OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Connection, Identity};

    fn flow() -> FlowView {
        FlowView {
            flow_id: "flw_1".into(),
            client: Some(Client {
                client_id: "cli_1".into(),
                client_name: "Tool <b>".into(),
                redirect_uris: vec!["http://127.0.0.1:9/cb".into(), "http://localhost/cb".into()],
                ..Default::default()
            }),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            scopes: vec!["mcp".into()],
            ..Default::default()
        }
    }

    #[test]
    fn loopback_detection() {
        for uri in [
            "http://127.0.0.1:9/cb",
            "http://localhost/cb",
            "http://[::1]:80/",
            "http://127.8.0.1/",
            "http://app.localhost/",
        ] {
            assert!(is_loopback(uri), "{uri}");
        }
        for uri in [
            "https://claude.ai/cb",
            "cursor://anysphere.cursor-mcp/cb",
            "http://10.0.0.1/",
            "garbage",
        ] {
            assert!(!is_loopback(uri), "{uri}");
        }
    }

    #[test]
    fn redirect_hosts() {
        assert_eq!(redirect_host("https://claude.ai/api/mcp/auth_callback"), "claude.ai");
        assert_eq!(redirect_host("http://[::1]:3000/cb"), "[::1]");
        assert_eq!(
            redirect_host("cursor://anysphere.cursor-mcp/oauth/callback"),
            "anysphere.cursor-mcp"
        );
        assert_eq!(redirect_host("com.example.app:/cb"), "com.example.app:");
    }

    #[test]
    fn the_identity_page_escapes_client_text_and_warns_about_loopback_clients() {
        let view = IdentityView::new(&flow(), "tok".into(), None);
        assert!(view.client.loopback_only);
        let html = view.render().unwrap();
        assert!(html.contains("Tool &#60;b&#62;") || html.contains("Tool &lt;b&gt;"), "{html}");
        assert!(html.contains("any program on this computer could be this client"));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(!html.contains("choice\" value=\"user"), "no sign-in when unavailable");
    }

    #[test]
    fn the_identity_page_offers_sign_in_and_the_proxy_user_only_when_available() {
        let mut flow = flow();
        flow.sign_in_available = true;
        let html = IdentityView::new(&flow, "tok".into(), Some("alice@example.com".into()))
            .render()
            .unwrap();
        assert!(html.contains(r#"value="user""#));
        assert!(html.contains("Continue as alice@example.com"));
    }

    #[test]
    fn a_refused_virtual_key_renders_with_401() {
        let mut view = IdentityView::new(&flow(), "tok".into(), None);
        view.error = Some("The virtual key was not accepted.".into());
        assert_eq!(view.into_page().into_response().status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn service_rows_name_their_status_and_buttons() {
        let service = |needs_connection, status: Option<ConnectionStatus>| ServiceStatus {
            service: "notes".into(),
            display_name: "Notes".into(),
            needs_connection,
            connection: status.map(|status| Connection {
                status: status as i32,
                account: "alice".into(),
                ..Default::default()
            }),
            scopes: vec![],
        };
        let row = ServiceRow::new(&service(false, None));
        assert_eq!(
            (row.status_text.as_str(), row.connect_label, row.can_disconnect),
            ("No connection needed", None, false)
        );
        let row = ServiceRow::new(&service(true, None));
        assert_eq!(
            (row.status_text.as_str(), row.connect_label, row.can_disconnect),
            ("Not connected", Some("Connect"), false)
        );
        let row = ServiceRow::new(&service(true, Some(ConnectionStatus::Connected)));
        assert_eq!(
            (row.status_text.as_str(), row.connect_label, row.can_disconnect),
            ("Connected as alice", Some("Reconnect"), true)
        );
        let row = ServiceRow::new(&service(true, Some(ConnectionStatus::Expiring)));
        assert!(row.status_text.contains("Expiring"));
        let row = ServiceRow::new(&service(true, Some(ConnectionStatus::NeedsReauth)));
        assert_eq!(row.status_text, "Needs re-authorization");
    }

    #[test]
    fn the_services_page_shows_the_identity_the_notice_and_approve_and_deny() {
        let mut flow = flow();
        flow.step = crate::pb::FlowStep::Services as i32;
        flow.identity = Some(Identity {
            kind: IdentityKind::Anonymous as i32,
            display_name: "anonymous".into(),
            ..Default::default()
        });
        flow.notice = "Connecting Notes failed: access_denied".into();
        let html = ServicesView::new(&flow, "tok".into()).render().unwrap();
        assert!(html.contains("only reachable by this application"));
        assert!(html.contains("Connecting Notes failed: access_denied"));
        assert!(html.contains(r#"action="/consent/flw_1/approve""#));
        assert!(html.contains(r#"action="/consent/flw_1/deny""#));
        assert!(html.contains(r#"href="/consent/flw_1/identity""#));
    }

    #[test]
    fn the_continuation_page_only_links_http_urls() {
        assert!(RedirectView::new("javascript:alert(1)".into()).is_none());
        assert!(RedirectView::new("data:text/html,x".into()).is_none());
        let view = RedirectView::new("https://provider.example/authorize?a=1&b=2".into()).unwrap();
        assert_eq!(view.destination, "provider.example");
        let html = view.render().unwrap();
        assert!(html.contains(r#"http-equiv="refresh""#));
        assert!(html.contains("a=1&#38;b=2") || html.contains("a=1&amp;b=2"), "{html}");
    }
}
