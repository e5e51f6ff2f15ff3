//! The control plane's invalidation events (`WatchEvents`): a revoked grant or
//! identity, a changed connection or service catalogue drops what this data
//! plane cached about it the moment the event arrives, instead of when the
//! entry expires. The stream is re-opened when it breaks; a control plane
//! that does not offer it yet (UNIMPLEMENTED) is asked again now and then,
//! and the caches fall back on their TTLs meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use crate::AppState;
use crate::pb::event::Kind;
use crate::pb::{Event, WatchEventsRequest};

/// Wait before asking a control plane that does not offer the stream again.
const UNIMPLEMENTED_RETRY: Duration = Duration::from_secs(60);
/// Longest wait between attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows the event stream until the task is aborted.
pub(crate) async fn watch(state: Arc<AppState>) {
    let mut backoff = Duration::from_secs(1);
    let mut had_stream = false;
    loop {
        let request = WatchEventsRequest {
            subscriber: "data-plane".to_owned(),
        };
        match state.cp.event_stream().watch_events(request).await {
            Ok(response) => {
                if had_stream {
                    // Events may have been missed while the stream was down.
                    state.mcp.forget_per_grant();
                }
                had_stream = true;
                backoff = Duration::from_secs(1);
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => apply(&state, event),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(target: "gatehouse::events", code = ?status.code(), "event stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::debug!(target: "gatehouse::events", "the control plane offers no event stream; caches expire by TTL");
                tokio::time::sleep(UNIMPLEMENTED_RETRY).await;
                continue;
            }
            Err(status) => {
                tracing::debug!(target: "gatehouse::events", code = ?status.code(), "event stream unavailable");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Drops what one event invalidates.
pub(crate) fn apply(state: &AppState, event: Event) {
    let gateway = &state.mcp;
    match event.kind {
        Some(Kind::GrantRevoked(grant_id)) => gateway.forget_grants(&[grant_id]),
        Some(Kind::IdentityRevoked(identity_id)) => {
            let grants = gateway.grants_of(&identity_id);
            gateway.callers.remove_where(|_, caller| caller.identity_id == identity_id);
            gateway.forget_grants(&grants);
        }
        Some(Kind::ConnectionChanged(changed)) => gateway.forget_connection(&changed.identity_id, &changed.service),
        Some(Kind::ServicesChanged(_)) => gateway.forget_services(),
        Some(Kind::SharedKeysChanged(_)) | None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ControlPlaneClientConfig, Credential as CpCredential, DataPlaneConfig};
    use crate::cp_client::ControlPlaneClient;
    use crate::mcp::services::{AuthMode, Credential, Service};
    use crate::mcp::{Caller, Gateway};
    use crate::pb::ConnectionChanged;

    fn state() -> AppState {
        let config = DataPlaneConfig {
            control_plane: ControlPlaneClientConfig {
                token: CpCredential::new("gh_svc_test"),
                ..Default::default()
            },
            ..Default::default()
        };
        AppState {
            cp: ControlPlaneClient::new(&config.control_plane).unwrap(),
            mcp: Gateway::new(&config).unwrap(),
            limiter: crate::ratelimit::Limiter::default(),
            metrics: Default::default(),
            config,
        }
    }

    fn caller(grant: &str, identity: &str, key: u8) -> Caller {
        Caller {
            grant_id: grant.into(),
            client_id: "cli".into(),
            identity_id: identity.into(),
            identity_name: identity.into(),
            scopes: vec!["mcp".into()],
            expires_at: i64::MAX,
            supports_url_elicitation: false,
            cache_key: [key; 32],
        }
    }

    fn service(name: &str) -> Service {
        Service {
            name: name.into(),
            display_name: name.into(),
            url: "http://x".into(),
            auth_mode: AuthMode::Oauth,
            allow_tools: vec![],
            deny_tools: vec![],
            timeout_ms: 0,
        }
    }

    fn credential() -> Credential {
        Credential {
            headers: vec![],
            version: "1".into(),
            cache_ttl: Duration::from_secs(60),
        }
    }

    fn cached(state: &AppState, grant: &str, service: &str) -> bool {
        state.mcp.credentials.get(&(grant.into(), service.into())).is_some()
    }

    fn event(kind: Kind) -> Event {
        Event { kind: Some(kind) }
    }

    #[tokio::test]
    async fn events_drop_what_they_invalidate() {
        let state = state();
        let (alice, bob) = (caller("g_a", "idn_a", 1), caller("g_b", "idn_b", 2));
        for caller in [&alice, &bob] {
            state
                .mcp
                .callers
                .insert(caller.cache_key, Arc::new(caller.clone()), Duration::from_secs(60));
            for name in ["notes", "mail"] {
                state.mcp.keep_credential(caller, &service(name), credential());
            }
        }
        apply(
            &state,
            event(Kind::ConnectionChanged(ConnectionChanged {
                identity_id: "idn_a".into(),
                service: "notes".into(),
            })),
        );
        assert!(!cached(&state, "g_a", "notes"));
        assert!(cached(&state, "g_a", "mail") && cached(&state, "g_b", "notes"));

        apply(&state, event(Kind::GrantRevoked("g_b".into())));
        assert!(state.mcp.callers.get(&bob.cache_key).is_none());
        assert!(!cached(&state, "g_b", "notes") && !cached(&state, "g_b", "mail"));
        assert!(state.mcp.callers.get(&alice.cache_key).is_some());

        apply(&state, event(Kind::IdentityRevoked("idn_a".into())));
        assert!(state.mcp.callers.get(&alice.cache_key).is_none());
        assert!(!cached(&state, "g_a", "mail"));
    }
}
