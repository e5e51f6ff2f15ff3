//! The vault over the store, on both backends: ciphertexts bound to their row,
//! rotation re-sealing every row while the control plane serves, and no
//! plaintext secret anywhere in the raw database.

use gatehouse::pb::{CreateVirtualKeyRequest, ListVaultKeysRequest, RotateVaultKeyRequest};
use gatehouse_control_plane::Core;
use gatehouse_control_plane::secret::Secret;
use gatehouse_control_plane::store::connections::{self, NewConnection};
use gatehouse_control_plane::vault::VaultError;
use sqlx::Row as _;

use crate::store_test;
use crate::support::TestControlPlane;
use crate::support::db::contains;

/// Stores a connection for `identity` with these upstream tokens.
async fn connect(core: &Core, id: &str, identity: &str, access: &str, refresh: &str) {
    let owner = connections::owner(Some(identity), None);
    let access = core
        .vault
        .seal_secret(connections::aad("access_ct", id, &owner, "notes"), &Secret::new(access))
        .unwrap();
    let refresh = core
        .vault
        .seal_secret(connections::aad("refresh_ct", id, &owner, "notes"), &Secret::new(refresh))
        .unwrap();
    core.store
        .put_connection(
            &NewConnection {
                id,
                identity_id: Some(identity),
                flow_id: None,
                service: "notes",
                account: "alice@example.com",
                scopes: "notes.read",
                access,
                refresh: Some(refresh),
                expires_at: Some(4_000_000_000),
            },
            core.now(),
        )
        .await
        .unwrap();
}

/// Opens a connection's access token from the store.
async fn open_access(core: &Core, id: &str) -> Result<String, VaultError> {
    let row = core.store.get_connection(id).await.unwrap().unwrap();
    let owner = row.owner();
    core.vault
        .open_secret(connections::aad("access_ct", &row.id, &owner, &row.service), &row.access_ct)
        .map(|s| s.expose().to_string())
}

store_test!(ciphertext_moved_to_another_row_does_not_open, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let core = cp.core();
    connect(core, "conn_a", "idn_alice", "alice-upstream-token", "alice-refresh").await;
    connect(core, "conn_b", "idn_mallory", "mallory-upstream-token", "mallory-refresh").await;
    assert_eq!(open_access(core, "conn_a").await.unwrap(), "alice-upstream-token");

    // An attacker with write access to the database copies Alice's ciphertext into Mallory's row.
    let mut raw = db.raw().await;
    let alice = sqlx::query("SELECT access_ct FROM connections WHERE id = 'conn_a'")
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get::<Vec<u8>, _>("access_ct")
        .unwrap();
    sqlx::query("UPDATE connections SET access_ct = $1 WHERE id = 'conn_b'")
        .bind(alice)
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(matches!(open_access(core, "conn_b").await, Err(VaultError::Decrypt)));
    assert_eq!(open_access(core, "conn_a").await.unwrap(), "alice-upstream-token");
    cp.stop().await;
});

store_test!(rotation_reseals_every_row_while_serving, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let core = cp.core().clone();
    // More rows than one re-seal batch.
    for i in 0..230 {
        connect(
            &core,
            &format!("conn_{i:03}"),
            &format!("idn_{i}"),
            &format!("token-{i}"),
            "r",
        )
        .await;
    }
    let old_key = core.vault.active_key_id();
    let admin = cp.admin().await;

    // Writes keep landing while the rotation runs.
    let writer = {
        let core = core.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                connect(
                    &core,
                    &format!("late_{i:02}"),
                    &format!("idn_late_{i}"),
                    &format!("late-{i}"),
                    "r",
                )
                .await;
            }
        })
    };
    let reply = admin
        .admin()
        .rotate_vault_key(RotateVaultKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    writer.await.unwrap();
    assert_ne!(reply.key_id, old_key);
    assert!(reply.resealed >= 230 - 20, "resealed {}", reply.resealed);

    let mut raw = db.raw().await;
    let stale: i64 = sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE key_id <> $1")
        .bind(&reply.key_id)
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(stale, 0, "every row is sealed under the new key");
    for i in [0, 117, 229] {
        assert_eq!(
            open_access(&core, &format!("conn_{i:03}")).await.unwrap(),
            format!("token-{i}")
        );
    }
    assert_eq!(open_access(&core, "late_19").await.unwrap(), "late-19");

    let keys = admin
        .admin()
        .list_vault_keys(ListVaultKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let active: Vec<_> = keys.iter().filter(|k| k.active).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, reply.key_id);
    assert_eq!(active[0].sealed_values, 250);
    assert_eq!(keys.iter().find(|k| k.id == old_key).unwrap().sealed_values, 0);
    // The key file now holds both keys; the old one still opens anything sealed under it.
    let key_file = std::fs::read_to_string(&cp.key_file).unwrap();
    assert!(key_file.contains(&old_key) && key_file.contains(&reply.key_id));
    cp.stop().await;
});

store_test!(raw_database_holds_no_issued_secret, |db| async move {
    let cp = TestControlPlane::start(&db).await;
    let core = cp.core().clone();
    let admin = cp.admin().await;
    let created = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let upstream_access = "ya29.upstream-access-token-4f1c2e";
    let upstream_refresh = "1//upstream-refresh-token-9a8b7c";
    connect(&core, "conn_1", "idn_1", upstream_access, upstream_refresh).await;
    cp.stop().await;

    let dump = db.raw_dump();
    assert!(contains(&dump, "alice"), "the dump is readable (sanity check of the search)");
    for (what, secret) in [
        ("virtual key", created.secret.as_str()),
        ("upstream access token", upstream_access),
        ("upstream refresh token", upstream_refresh),
        ("admin credential", crate::support::plane::ADMIN),
    ] {
        assert!(!contains(&dump, secret), "the raw database holds the {what} in plaintext");
    }
    // What is stored instead: the virtual key's hash.
    assert!(contains(&dump, &gatehouse_control_plane::secret::hash(&created.secret)));
});
