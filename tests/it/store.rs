//! The store on both backends: every table group round-trips.

use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use gatehouse_control_plane::store::Store;
use gatehouse_control_plane::store::audit::{AuditQuery, NewAuditEvent};
use gatehouse_control_plane::store::virtual_keys::NewVirtualKey;

use crate::store_test;

async fn open(db: &crate::support::TestDb) -> Store {
    Store::connect(&db.url).await.expect("store opens and migrates")
}

fn server(name: &str) -> McpServer {
    McpServer {
        name: name.into(),
        display_name: name.to_uppercase(),
        url: format!("https://{name}.example.com/mcp"),
        auth_mode: AuthMode::Oauth,
        allow_tools: vec!["search".into()],
        ..Default::default()
    }
}

store_test!(migrations_apply_twice_without_harm, |db| async move {
    let first = open(&db).await;
    first.close().await;
    let second = open(&db).await;
    second.ping().await.unwrap();
});

store_test!(mcp_servers_round_trip, |db| async move {
    let store = open(&db).await;
    assert!(store.insert_mcp_server(&server("notes"), "admin", 100).await.unwrap());
    assert!(
        !store.insert_mcp_server(&server("notes"), "admin", 101).await.unwrap(),
        "a taken name is refused"
    );
    let got = store.get_mcp_server("notes").await.unwrap().unwrap();
    assert_eq!(got.url, "https://notes.example.com/mcp");
    assert_eq!(got.allow_tools, ["search"]);
    assert_eq!((got.source.as_str(), got.created_at), ("admin", 100));

    let mut changed = server("notes");
    changed.url = "https://elsewhere.example.com/mcp".into();
    assert!(store.update_mcp_server(&changed, 200).await.unwrap());
    assert!(!store.update_mcp_server(&server("nope"), 200).await.unwrap());
    let got = store.get_mcp_server("notes").await.unwrap().unwrap();
    assert_eq!(
        (got.url.as_str(), got.updated_at, got.created_at),
        ("https://elsewhere.example.com/mcp", 200, 100)
    );

    store.upsert_mcp_server(&server("alpha"), "config", 300).await.unwrap();
    store.upsert_mcp_server(&server("alpha"), "config", 301).await.unwrap();
    let names: Vec<_> = store.list_mcp_servers().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["alpha", "notes"]);

    assert_eq!(store.delete_mcp_server("notes").await.unwrap(), Some(0));
    assert_eq!(store.delete_mcp_server("notes").await.unwrap(), None);
    assert!(store.get_mcp_server("notes").await.unwrap().is_none());
});

store_test!(virtual_key_revocation_revokes_identity_and_grants, |db| async move {
    let store = open(&db).await;
    let key = NewVirtualKey {
        id: "vk_1",
        name: "alice",
        secret_hash: "hash-1",
        prefix: "gh_vk_abcd",
        identity_id: "idn_1",
    };
    store.insert_virtual_key(&key, 10).await.unwrap();
    let mut raw = db.raw().await;
    sqlx::query(
        "INSERT INTO grants (id, client_id, identity_id, scope, resource, created_at, idle_expires_at) VALUES ('g1', 'c1', 'idn_1', 'mcp', 'r', 10, 99999)",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        store.find_virtual_key_by_hash("hash-1").await.unwrap().unwrap().identity_id,
        "idn_1"
    );
    assert!(store.find_virtual_key_by_hash("other").await.unwrap().is_none());

    let revoked = store.revoke_virtual_key("vk_1", 20).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(20));
    assert!(
        store.find_virtual_key_by_hash("hash-1").await.unwrap().is_none(),
        "a revoked key proves nothing"
    );
    assert!(store.revoke_virtual_key("vk_missing", 20).await.unwrap().is_none());
    assert!(store.list_virtual_keys(false).await.unwrap().is_empty());
    assert_eq!(store.list_virtual_keys(true).await.unwrap().len(), 1);

    use sqlx::Row as _;
    let row = sqlx::query("SELECT revoked_at, revoke_reason FROM grants WHERE id = 'g1'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(row.try_get::<Option<i64>, _>("revoked_at").unwrap(), Some(20));
    let row = sqlx::query("SELECT revoked_at FROM identities WHERE id = 'idn_1'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(row.try_get::<Option<i64>, _>("revoked_at").unwrap(), Some(20));
});

store_test!(audit_log_filters_and_pages_newest_first, |db| async move {
    let store = open(&db).await;
    for (i, (actor, action)) in [
        ("admin:a", "virtual_key.create"),
        ("admin:b", "mcp_server.create"),
        ("admin:a", "virtual_key.revoke"),
        ("admin:a", "virtual_keyXcreate"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = NewAuditEvent {
            actor,
            action,
            target: "t",
            remote_addr: "127.0.0.1:1",
            detail: String::new(),
        };
        store.append_audit(event, 1000 + i as i64).await.unwrap();
    }
    let all = store
        .query_audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].detail, "{}");

    let by_prefix = store
        .query_audit(&AuditQuery {
            action_prefix: Some("virtual_key.".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<_> = by_prefix.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["virtual_key.revoke", "virtual_key.create"],
        "`.` and `_` are literal, not wildcards"
    );

    let by_actor = store
        .query_audit(&AuditQuery {
            actor: Some("admin:b".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 1);

    let page = store
        .query_audit(&AuditQuery {
            before_id: Some(all[1].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, all[2].id);
    let since = store
        .query_audit(&AuditQuery {
            since_ms: Some(1002),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
});
