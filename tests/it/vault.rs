//! The vault over the store, on both backends: ciphertexts bound to their row
//! in every sealed table (connections, upstream clients, upstream attempts,
//! shared keys), rotation re-sealing every such column while the control
//! plane serves, and no plaintext secret anywhere in the raw database.

use std::sync::Arc;

use gatehouse::admin_client::GrpcClient;
use gatehouse::demo::{DemoUpstream, StaticClient, TokenEndpointAuthMethod, hidden_fields};
use gatehouse::pb::{
    self, ChooseIdentityRequest, CompleteConnectRequest, ConnectServiceRequest, CreateVirtualKeyRequest, FlowRef,
    ListVaultKeysRequest, RegisterClientRequest, RotateVaultKeyRequest, StartFlowRequest, choose_identity_request::Choice,
};
use gatehouse_control_plane::Core;
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, UpstreamOAuth};
use gatehouse_control_plane::secret::{self, Secret};
use gatehouse_control_plane::store::connections::{self, NewConnection};
use gatehouse_control_plane::store::reseal;
use gatehouse_control_plane::upstream::{self, pkce_challenge};
use gatehouse_control_plane::vault::VaultError;
use serde_json::json;
use sqlx::Row as _;

use crate::store_test;
use crate::support::db::contains;
use crate::support::http_fixture::{HttpFixture, Reply};
use crate::support::plane::DATA_PLANE;
use crate::support::{TestControlPlane, TestDb};

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

// === Every sealed table, made through the connect path ===

/// The test control plane's public URL (see `support::plane::config`).
const PUBLIC_URL: &str = "http://127.0.0.1:9";
/// What the upstream's registration endpoint hands Gatehouse: a confidential
/// client, so its secret is stored sealed in `upstream_clients.secret_ct`.
const UPSTREAM_CLIENT_ID: &str = "gatehouse-at-demo";
const UPSTREAM_CLIENT_SECRET: &str = "upstream-client-secret-7c1e9a";

/// The demo upstream as two OAuth services ("notes", "docs") whose dynamic
/// registration answers with a client secret, and a control plane.
struct Upstream {
    demo: DemoUpstream,
    _registration: HttpFixture,
    cp: TestControlPlane,
    grpc: GrpcClient,
    browser: reqwest::Client,
}

impl Upstream {
    async fn start(db: &TestDb) -> Self {
        let demo = crate::support::fleet::demo_upstream().await;
        // RFC 7591 §3.2.1: the server may register another method than the one
        // asked for; this one hands out a secret (known to the demo's token endpoint).
        demo.add_client(StaticClient {
            client_id: UPSTREAM_CLIENT_ID.into(),
            client_secret: Some(UPSTREAM_CLIENT_SECRET.into()),
            auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
            redirect_uris: vec![format!("{PUBLIC_URL}/oauth/callback")],
            client_name: Some("Gatehouse".into()),
        })
        .expect("demo client");
        let registration = HttpFixture::start(|_, _| {
            Reply::Json(
                json!({
                    "client_id": UPSTREAM_CLIENT_ID,
                    "client_secret": UPSTREAM_CLIENT_SECRET,
                    "token_endpoint_auth_method": "client_secret_basic",
                })
                .to_string(),
            )
        })
        .await;
        let services = ["notes", "docs"].map(|name| service(name, &demo, &registration));
        let cp = TestControlPlane::start_configured(db, Arc::new(TestClock::default()), move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = services.to_vec();
        })
        .await;
        let grpc = cp.client(DATA_PLANE).await;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        Self {
            demo,
            _registration: registration,
            cp,
            grpc,
            browser,
        }
    }

    /// A new client's flow, Skip chosen.
    async fn skipped_flow(&self) -> FlowRef {
        let mut flows = self.grpc.flows();
        let client_id = flows
            .register_client(RegisterClientRequest {
                redirect_uris: vec!["http://127.0.0.1/callback".into()],
                token_endpoint_auth_method: "none".into(),
                ..Default::default()
            })
            .await
            .expect("RegisterClient")
            .into_inner()
            .client
            .expect("client")
            .client_id;
        let started = flows
            .start_flow(StartFlowRequest {
                client_id,
                redirect_uri: "http://127.0.0.1/callback".into(),
                response_type: "code".into(),
                code_challenge: pkce_challenge(secret::generate("").expose()),
                code_challenge_method: "S256".into(),
                scope: "mcp".into(),
                ..Default::default()
            })
            .await
            .expect("StartFlow")
            .into_inner();
        let flow = FlowRef {
            flow_id: started.flow_id,
            browser_secret: started.browser_secret,
            remote_addr: "192.0.2.9:4000".into(),
        };
        flows
            .choose_identity(ChooseIdentityRequest {
                flow: Some(flow.clone()),
                choice: Some(Choice::Skip(true)),
            })
            .await
            .expect("Skip");
        flow
    }

    /// ConnectService: the upstream authorization URL (an attempt is stored).
    async fn connect(&self, flow: &FlowRef, service: &str) -> String {
        self.grpc
            .flows()
            .connect_service(ConnectServiceRequest {
                flow: Some(flow.clone()),
                service: service.into(),
            })
            .await
            .expect("ConnectService")
            .into_inner()
            .authorization_url
    }

    /// Allows at the demo's consent page: the callback this browser brings back.
    async fn allow(&self, flow: &FlowRef, authorization_url: &str) -> CompleteConnectRequest {
        let page = self.browser.get(authorization_url).send().await.expect("GET /authorize");
        let mut form = hidden_fields(&page.text().await.expect("page"));
        form.push(("account".into(), "alice".into()));
        form.push(("decision".into(), "allow".into()));
        let answer = self
            .browser
            .post(format!("{}/authorize", self.demo.base_url()))
            .form(&form)
            .send()
            .await
            .expect("POST /authorize");
        let location = answer.headers()["location"].to_str().expect("location").to_string();
        let params: Vec<(String, String)> = url::Url::parse(&location).expect("URL").query_pairs().into_owned().collect();
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        CompleteConnectRequest {
            state: get("state"),
            code: get("code"),
            iss: get("iss"),
            browser_secret: flow.browser_secret.clone(),
            remote_addr: "192.0.2.9:4000".into(),
            ..Default::default()
        }
    }

    async fn complete(&self, callback: CompleteConnectRequest) -> Result<pb::CompleteConnectResponse, tonic::Status> {
        self.grpc.flows().complete_connect(callback).await.map(|r| r.into_inner())
    }

    fn server(&self, name: &str) -> McpServer {
        self.cp
            .core()
            .config
            .mcp_servers
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .expect("configured service")
    }
}

fn service(name: &str, demo: &DemoUpstream, registration: &HttpFixture) -> McpServer {
    McpServer {
        name: name.into(),
        display_name: name.into(),
        url: demo.mcp_url(),
        auth_mode: AuthMode::Oauth,
        oauth: UpstreamOAuth {
            scopes: vec!["notes.read".into()],
            registration_endpoint: registration.url("/register"),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The state of an upstream authorization URL.
fn state_of(authorization_url: &str) -> String {
    url::Url::parse(authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state")
}

/// Every sealed column: (table, primary key, column, the associated data's owner and service SQL).
const SEALED: [(&str, &str, &str, &str, &str); 5] = [
    (
        "connections",
        "id",
        "access_ct",
        "COALESCE(identity_id, 'flow:' || flow_id)",
        "service",
    ),
    (
        "connections",
        "id",
        "refresh_ct",
        "COALESCE(identity_id, 'flow:' || flow_id)",
        "service",
    ),
    ("upstream_attempts", "state_hash", "verifier_ct", "''", "service"),
    ("upstream_clients", "service", "secret_ct", "''", "service"),
    ("shared_keys", "id", "key_ct", "''", "purpose"),
];

/// One stored ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredCt {
    table: &'static str,
    column: &'static str,
    pk: String,
    key_id: String,
    blob: Vec<u8>,
}

/// Every ciphertext the database holds, table by table.
async fn sealed_values(db: &TestDb) -> Vec<StoredCt> {
    let mut raw = db.raw().await;
    let mut out = Vec::new();
    for (table, pk, column, _, _) in SEALED {
        let sql = format!("SELECT {pk} AS pk, key_id, {column} AS ct FROM {table} WHERE {column} IS NOT NULL ORDER BY {pk}");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut raw).await.unwrap() {
            out.push(StoredCt {
                table,
                column,
                pk: row.try_get("pk").unwrap(),
                key_id: row.try_get("key_id").unwrap(),
                blob: row.try_get("ct").unwrap(),
            });
        }
    }
    out
}

/// Opens a stored value with the associated data of the row it is stored in.
async fn open_in_place(
    core: &Core,
    db: &TestDb,
    table: &'static str,
    column: &'static str,
    pk: &str,
) -> Result<Vec<u8>, VaultError> {
    let (_, pk_column, _, owner, service) = SEALED
        .into_iter()
        .find(|(t, _, c, _, _)| *t == table && *c == column)
        .expect("a sealed column");
    let mut raw = db.raw().await;
    let sql = format!("SELECT {owner} AS owner, {service} AS service, {column} AS ct FROM {table} WHERE {pk_column} = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(pk.to_owned())
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let (owner, service): (String, String) = (row.try_get("owner").unwrap(), row.try_get("service").unwrap());
    let blob: Vec<u8> = row.try_get("ct").unwrap();
    core.vault.open(reseal::aad(table, column, pk, &owner, &service), &blob)
}

/// What an attacker with write access does: copies a ciphertext from one row into another.
async fn move_ciphertext(db: &TestDb, table: &'static str, column: &'static str, from: &str, to: &str) {
    let (_, pk, _, _, _) = SEALED
        .into_iter()
        .find(|(t, _, c, _, _)| *t == table && *c == column)
        .expect("a sealed column");
    let mut raw = db.raw().await;
    let blob: Vec<u8> = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {column} FROM {table} WHERE {pk} = $1")))
        .bind(from.to_owned())
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {column} = $1 WHERE {pk} = $2"
    )))
    .bind(blob)
    .bind(to.to_owned())
    .execute(&mut raw)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1, "{table}.{column}: row {to} exists");
}

/// Stores a shared key as the control plane would hand one to the data planes
/// (no write path yet: sealed here with the associated data re-sealing uses).
async fn put_shared_key(core: &Core, db: &TestDb, id: &str, purpose: &str, key: &[u8]) {
    let sealed = core
        .vault
        .seal(reseal::aad("shared_keys", "key_ct", id, "", purpose), key)
        .unwrap();
    let mut raw = db.raw().await;
    sqlx::query("INSERT INTO shared_keys (id, purpose, key_ct, key_id, active, created_at) VALUES ($1, $2, $3, $4, 1, $5)")
        .bind(id.to_owned())
        .bind(purpose.to_owned())
        .bind(sealed.blob)
        .bind(sealed.key_id)
        .bind(core.now())
        .execute(&mut raw)
        .await
        .unwrap();
}

store_test!(rotation_reseals_every_sealed_column, |db| async move {
    let up = Upstream::start(&db).await;
    let core = up.cp.core().clone();
    let flow = up.skipped_flow().await;
    // A finished connect: Gatehouse's registered client (secret_ct), its
    // attempt (verifier_ct, consumed), and the flow's connection (access_ct, refresh_ct).
    let url = up.connect(&flow, "notes").await;
    let callback = up.allow(&flow, &url).await;
    assert!(up.complete(callback).await.unwrap().connected);
    // A connect in progress: the person allowed at the provider, the callback comes after the rotation.
    let pending_url = up.connect(&flow, "notes").await;
    let pending = up.allow(&flow, &pending_url).await;
    put_shared_key(&core, &db, "shk_1", "mcp-session", &[7u8; 32]).await;

    let old_key = core.vault.active_key_id();
    let before = sealed_values(&db).await;
    for (table, _, column, _, _) in SEALED {
        assert!(
            before.iter().any(|v| v.table == table && v.column == column),
            "the setup stores a value in {table}.{column}"
        );
    }
    assert!(before.iter().all(|v| v.key_id == old_key));
    let reply = up
        .cp
        .admin()
        .await
        .admin()
        .rotate_vault_key(RotateVaultKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_ne!(reply.key_id, old_key);

    let after = sealed_values(&db).await;
    assert_eq!(after.len(), before.len(), "no value lost");
    for (old, new) in before.iter().zip(&after) {
        assert_eq!((old.table, old.column, &old.pk), (new.table, new.column, &new.pk));
        assert_eq!(
            new.key_id, reply.key_id,
            "{}.{} of {} re-sealed",
            new.table, new.column, new.pk
        );
        assert_ne!(
            new.blob, old.blob,
            "{}.{} of {} is a new ciphertext",
            new.table, new.column, new.pk
        );
        assert_eq!(
            gatehouse_control_plane::vault::key_id_of(&new.blob).unwrap(),
            reply.key_id,
            "the blob names the key that sealed it"
        );
        open_in_place(&core, &db, new.table, new.column, &new.pk)
            .await
            .unwrap_or_else(|e| panic!("{}.{} of {} opens after rotation: {e}", new.table, new.column, new.pk));
    }

    // Each re-sealed value still does its job where it is read: the remembered
    // client's secret...
    let client = upstream::client(&core, &up.server("notes"))
        .await
        .expect("the remembered client");
    assert_eq!(client.credentials.client_id, UPSTREAM_CLIENT_ID);
    assert_eq!(
        client.credentials.secret.as_ref().map(Secret::expose),
        Some(UPSTREAM_CLIENT_SECRET)
    );
    // ...the connection's tokens...
    let row = core.store.list_connections(None, Some("notes")).await.unwrap().pop().unwrap();
    let access = core
        .vault
        .open_secret(connections::aad("access_ct", &row.id, &row.owner(), "notes"), &row.access_ct)
        .unwrap();
    let userinfo = up
        .browser
        .get(format!("{}/userinfo", up.demo.base_url()))
        .bearer_auth(access.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(
        userinfo.status(),
        reqwest::StatusCode::OK,
        "the re-sealed access token is the live one"
    );
    // ...and the pending attempt's verifier, with the client secret, completes the
    // code exchange at the provider (PKCE and client authentication both checked there).
    let exchanges = up.demo.stats().code_exchanges();
    assert!(up.complete(pending).await.unwrap().connected);
    assert_eq!(up.demo.stats().code_exchanges(), exchanges + 1);
    let shared = open_in_place(&core, &db, "shared_keys", "key_ct", "shk_1").await.unwrap();
    assert_eq!(shared, [7u8; 32]);
    assert_eq!(
        core.store
            .count_sealed_by_key()
            .await
            .unwrap()
            .iter()
            .find(|(k, _)| *k == old_key)
            .map(|(_, n)| *n)
            .unwrap_or(0),
        0,
        "nothing is left under the old key"
    );
    up.cp.stop().await;
});

store_test!(
    ciphertext_moved_between_rows_of_any_sealed_table_does_not_open,
    |db| async move {
        let up = Upstream::start(&db).await;
        let core = up.cp.core().clone();
        let flow = up.skipped_flow().await;
        // Two attempts for "notes" and one for "docs": two attempt rows of one
        // service, and two upstream client rows (one per service).
        let url_a = up.connect(&flow, "notes").await;
        let url_b = up.connect(&flow, "notes").await;
        let _docs = up.connect(&flow, "docs").await;
        let (state_a, state_b) = (secret::hash(&state_of(&url_a)), secret::hash(&state_of(&url_b)));

        // upstream_attempts: attempt A's verifier in attempt B's row.
        move_ciphertext(&db, "upstream_attempts", "verifier_ct", &state_a, &state_b).await;
        assert!(matches!(
            open_in_place(&core, &db, "upstream_attempts", "verifier_ct", &state_b).await,
            Err(VaultError::Decrypt)
        ));
        let callback_b = up.allow(&flow, &url_b).await;
        assert!(
            up.complete(callback_b).await.is_err(),
            "the callback of B cannot use A's verifier"
        );
        assert!(core.store.list_connections(None, Some("notes")).await.unwrap().is_empty());
        let callback_a = up.allow(&flow, &url_a).await;
        assert!(up.complete(callback_a).await.unwrap().connected, "A's own row still opens");

        // upstream_clients: the "notes" client's secret in the "docs" row.
        move_ciphertext(&db, "upstream_clients", "secret_ct", "notes", "docs").await;
        assert!(matches!(
            open_in_place(&core, &db, "upstream_clients", "secret_ct", "docs").await,
            Err(VaultError::Decrypt)
        ));
        assert!(
            upstream::client(&core, &up.server("docs")).await.is_err(),
            "the docs client's secret does not open"
        );
        assert!(upstream::client(&core, &up.server("notes")).await.is_ok());

        // shared_keys: one key's ciphertext in another key's row.
        put_shared_key(&core, &db, "shk_a", "mcp-session", &[1u8; 32]).await;
        put_shared_key(&core, &db, "shk_b", "mcp-session", &[2u8; 32]).await;
        move_ciphertext(&db, "shared_keys", "key_ct", "shk_a", "shk_b").await;
        assert!(matches!(
            open_in_place(&core, &db, "shared_keys", "key_ct", "shk_b").await,
            Err(VaultError::Decrypt)
        ));
        assert_eq!(
            open_in_place(&core, &db, "shared_keys", "key_ct", "shk_a").await.unwrap(),
            [1u8; 32]
        );
        up.cp.stop().await;
    }
);
