//! The admin service over gRPC: the MCP server registry and virtual keys, with
//! the refusals an operator sees and the audit trail they leave.

use gatehouse::pb::{
    self, CreateMcpServerRequest, CreateVirtualKeyRequest, DeleteMcpServerRequest, ErrorReason, GetMcpServerRequest,
    ListMcpServersRequest, ListVirtualKeysRequest, QueryAuditLogRequest, RevokeVirtualKeyRequest, UpdateMcpServerRequest,
    UpstreamAuthMode,
};
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use tonic::Code;

use crate::store_test;
use crate::support::TestControlPlane;

fn server(name: &str, url: &str) -> pb::McpServer {
    pb::McpServer {
        name: name.into(),
        url: url.into(),
        auth_mode: UpstreamAuthMode::Oauth as i32,
        oauth: Some(pb::UpstreamOAuth {
            scopes: vec!["notes.read".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The machine-readable reason in a refusal's details.
fn reason(status: &tonic::Status) -> ErrorReason {
    let detail = gatehouse::admin_client::error_detail(status).expect("refusals carry an ErrorDetail");
    ErrorReason::try_from(detail.reason).expect("known reason")
}

store_test!(mcp_server_registry_round_trips_over_grpc, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let client = cp.admin().await;
    let mut admin = client.admin();

    let created = admin
        .create_mcp_server(CreateMcpServerRequest {
            server: Some(server("notes", "https://notes.example.com/mcp")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((created.display_name.as_str(), created.source.as_str()), ("notes", "admin"));
    assert_eq!(created.oauth.unwrap().scopes, ["notes.read"]);

    let dup = admin
        .create_mcp_server(CreateMcpServerRequest {
            server: Some(server("notes", "https://other.example.com/mcp")),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_eq!(reason(&dup), ErrorReason::AlreadyExists);

    for (case, bad) in [
        ("uppercase name", server("Notes", "https://x.example.com/mcp")),
        ("not a URL", server("bad-url", "notes.example.com/mcp")),
        ("static headers without headers", {
            let mut s = server("static", "https://x.example.com/mcp");
            s.auth_mode = UpstreamAuthMode::StaticHeaders as i32;
            s
        }),
    ] {
        let err = admin
            .create_mcp_server(CreateMcpServerRequest { server: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err:?}");
        assert_eq!(reason(&err), ErrorReason::InvalidRequest, "{case}");
    }
    let missing = admin
        .create_mcp_server(CreateMcpServerRequest { server: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);

    let mut changed = server("notes", "https://notes2.example.com/mcp");
    changed.deny_tools = vec!["delete_page".into()];
    let updated = admin
        .update_mcp_server(UpdateMcpServerRequest { server: Some(changed) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.url, "https://notes2.example.com/mcp");
    assert_eq!(updated.deny_tools, ["delete_page"]);
    let got = admin
        .get_mcp_server(GetMcpServerRequest { name: "notes".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, updated);
    let unknown = admin
        .update_mcp_server(UpdateMcpServerRequest {
            server: Some(server("ghost", "https://g.example.com/mcp")),
        })
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown)), (Code::NotFound, ErrorReason::NotFound));

    let list = admin
        .list_mcp_servers(ListMcpServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(list.len(), 1);
    let deleted = admin
        .delete_mcp_server(DeleteMcpServerRequest { name: "notes".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.connections_deleted, 0);
    let again = admin
        .delete_mcp_server(DeleteMcpServerRequest { name: "notes".into() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    let audit = admin
        .query_audit_log(QueryAuditLogRequest {
            action_prefix: "mcp_server.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<_> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["mcp_server.delete", "mcp_server.update", "mcp_server.create"]);
    assert!(audit.iter().all(|e| e.actor == "admin:test-admin" && e.target == "notes"));
    assert!(audit.iter().all(|e| e.remote_addr.starts_with("127.0.0.1:")));
    cp.stop().await;
});

store_test!(config_seeds_mcp_servers_and_keeps_admin_entries, |db| async move {
    let seeded = McpServer {
        name: "search".into(),
        url: "https://search.example.com/mcp".into(),
        auth_mode: AuthMode::None,
        ..Default::default()
    };
    let cp = TestControlPlane::start_with(&db, vec![seeded.clone()]).await;
    let client = cp.admin().await;
    client
        .admin()
        .create_mcp_server(CreateMcpServerRequest {
            server: Some(server("notes", "https://notes.example.com/mcp")),
        })
        .await
        .unwrap();
    cp.stop().await;

    // A restart with a changed config entry replaces it and keeps the admin's.
    let mut changed = seeded;
    changed.url = "https://search2.example.com/mcp".into();
    let cp = TestControlPlane::start_with(&db, vec![changed]).await;
    let client = cp.admin().await;
    let list = client
        .admin()
        .list_mcp_servers(ListMcpServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    let summary: Vec<_> = list
        .iter()
        .map(|s| (s.name.as_str(), s.url.as_str(), s.source.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("notes", "https://notes.example.com/mcp", "admin"),
            ("search", "https://search2.example.com/mcp", "config")
        ]
    );
    cp.stop().await;
});

store_test!(virtual_keys_show_their_secret_once, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let client = cp.admin().await;
    let mut admin = client.admin();
    let created = admin
        .create_virtual_key(CreateVirtualKeyRequest { name: "ci bot".into() })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    assert!(created.secret.starts_with("gh_vk_") && created.secret.len() > 40);
    assert!(created.secret.starts_with(&key.prefix));
    assert!(!key.identity_id.is_empty());

    let listed = admin
        .list_virtual_keys(ListVirtualKeysRequest { include_revoked: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys, std::slice::from_ref(&key));
    assert!(
        !format!("{listed:?}").contains(&created.secret),
        "listing never shows the secret"
    );

    // The secret proves the identity until revoked.
    let core = cp.core();
    let secret = gatehouse_control_plane::secret::Secret::new(created.secret.clone());
    let proved = gatehouse_control_plane::virtual_keys::verify(core, &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proved.identity_id, key.identity_id);

    let revoked = admin
        .revoke_virtual_key(RevokeVirtualKeyRequest { id: key.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at > 0);
    assert!(
        gatehouse_control_plane::virtual_keys::verify(core, &secret)
            .await
            .unwrap()
            .is_none()
    );
    let listed = admin
        .list_virtual_keys(ListVirtualKeysRequest { include_revoked: false })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.is_empty());

    let unknown = admin
        .revoke_virtual_key(RevokeVirtualKeyRequest { id: "vk_nope".into() })
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown)), (Code::NotFound, ErrorReason::NotFound));
    let blank = admin
        .create_virtual_key(CreateVirtualKeyRequest { name: "  ".into() })
        .await
        .unwrap_err();
    assert_eq!(blank.code(), Code::InvalidArgument);

    let audit = admin
        .query_audit_log(QueryAuditLogRequest {
            action_prefix: "virtual_key.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(audit.len(), 2);
    assert!(
        !format!("{audit:?}").contains(&created.secret),
        "the audit log holds no secret"
    );
    cp.stop().await;
});
