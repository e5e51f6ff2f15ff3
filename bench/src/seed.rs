//! Seeding the store directly, so 100,000 users cost seconds rather than
//! 100,000 consent flows: identities, grants, access tokens (stored as their
//! SHA-256, as Gatehouse stores them), vault connections (each user's upstream
//! token sealed by the control plane's vault, bound to its row exactly as
//! `store::connections::aad` binds it), and authorization codes for the
//! `/token` runs. Multi-row INSERTs (`$n` placeholders), 100 rows each, in one transaction per
//! table and batch; the same SQL on SQLite and PostgreSQL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use gatehouse_control_plane::secret;
use gatehouse_control_plane::store::connections;
use gatehouse_control_plane::vault::Vault;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Rows per INSERT: SQLite looks bound parameters up by name, so a statement
/// with thousands of them is slow to bind; 100 rows of 4 to 11 columns is fast on both.
const BATCH: usize = 100;

/// One bound value of a seeded row.
enum Param {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Vec<u8>> for Param {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

/// `INSERT INTO {head} VALUES ($1, …), (…)` with every row's values bound in
/// order (`$n` placeholders, which both backends take through the Any driver).
async fn insert<'c, E>(executor: E, head: &str, rows: Vec<Vec<Param>>) -> anyhow::Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let mut sql = format!("INSERT INTO {head} VALUES ");
    let mut n = 0;
    for (i, row) in rows.iter().enumerate() {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for j in 0..row.len() {
            n += 1;
            sql.push_str(&if j == 0 { format!("${n}") } else { format!(", ${n}") });
        }
        sql.push(')');
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in rows.into_iter().flatten() {
        query = match value {
            Param::Text(v) => query.bind(v),
            Param::Int(v) => query.bind(v),
            Param::Blob(v) => query.bind(v),
        };
    }
    query.execute(executor).await?;
    Ok(())
}

/// What every seeded grant shares: the client and what it was granted.
#[derive(Debug, Clone)]
pub struct GrantShape {
    pub client_id: String,
    pub scope: String,
    pub resource: String,
    pub redirect_uri: String,
}

/// A seeding connection to one store.
pub struct Seeder {
    pool: AnyPool,
    postgres: bool,
    /// Distinguishes this run's rows (and tokens) from another run's.
    run: String,
    pub seeded: usize,
    /// Access tokens of seeded users, by index.
    pub tokens: Vec<String>,
    pub took: Duration,
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Seeder {
    pub async fn connect(database_url: &str, run: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await
            .context("seeding connection")?;
        Ok(Self {
            pool,
            postgres: database_url.starts_with("postgres"),
            run: run.to_owned(),
            seeded: 0,
            tokens: Vec::new(),
            took: Duration::ZERO,
        })
    }

    fn identity(&self, i: usize) -> String {
        format!("idt_bench_{}_{i:06}", self.run)
    }

    fn grant(&self, i: usize) -> String {
        format!("grt_bench_{}_{i:06}", self.run)
    }

    /// The grant id of seeded user `i`.
    pub fn grant_id(&self, i: usize) -> String {
        self.grant(i)
    }

    /// Seeds users `self.seeded..total`: identity, grant, access token and a
    /// connection to `service` with a sealed upstream token.
    pub async fn seed_users(&mut self, total: usize, shape: &GrantShape, vault: &Vault, service: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let now = unix_now();
        let key_id = vault.active_key_id();
        let mut start = self.seeded;
        while start < total {
            let end = (start + BATCH).min(total);
            let range = start..end;
            let mut tx = self.pool.begin().await?;

            let rows = range
                .clone()
                .map(|i| {
                    vec![
                        self.identity(i).into(),
                        "anonymous".into(),
                        format!("Bench user {i}").into(),
                        now.into(),
                    ]
                })
                .collect();
            insert(&mut *tx, "identities (id, kind, display_name, created_at)", rows).await?;

            let rows = range
                .clone()
                .map(|i| {
                    vec![
                        self.grant(i).into(),
                        shape.client_id.as_str().into(),
                        self.identity(i).into(),
                        shape.scope.as_str().into(),
                        shape.resource.as_str().into(),
                        now.into(),
                        (now + 30 * 86_400).into(),
                        0i64.into(),
                    ]
                })
                .collect();
            insert(
                &mut *tx,
                "grants (id, client_id, identity_id, scope, resource, created_at, idle_expires_at, url_elicitation)",
                rows,
            )
            .await?;

            let tokens: Vec<String> = range
                .clone()
                .map(|i| format!("{}bench{}x{i:06}", secret::prefix::ACCESS_TOKEN, self.run))
                .collect();
            let rows = range
                .clone()
                .zip(&tokens)
                .map(|(i, token)| {
                    vec![
                        secret::hash(token).into(),
                        self.grant(i).into(),
                        now.into(),
                        (now + 86_400).into(),
                    ]
                })
                .collect();
            insert(&mut *tx, "access_tokens (token_hash, grant_id, created_at, expires_at)", rows).await?;

            let mut sealed = Vec::with_capacity(range.len());
            for i in range.clone() {
                let id = format!("con_bench_{}_{i:06}", self.run);
                let identity = self.identity(i);
                let upstream_token = secret::Secret::new(format!("upstream-token-{}-{i}", self.run));
                let blob = vault
                    .seal_secret(connections::aad("access_ct", &id, &identity, service), &upstream_token)?
                    .blob;
                sealed.push((id, identity, blob));
            }
            let rows = sealed
                .into_iter()
                .map(|(id, identity, blob)| {
                    vec![
                        id.into(),
                        identity.into(),
                        service.into(),
                        "connected".into(),
                        "bench".into(),
                        "".into(),
                        blob.into(),
                        key_id.as_str().into(),
                        1i64.into(),
                        now.into(),
                        now.into(),
                    ]
                })
                .collect();
            insert(
                &mut *tx,
                "connections (id, identity_id, service, status, account, scopes, access_ct, key_id, version, created_at, updated_at)",
                rows,
            )
            .await?;
            tx.commit().await?;
            self.tokens.extend(tokens);
            start = end;
        }
        // Fresh planner statistics, as a live database has (PostgreSQL would
        // otherwise plan the joins for the tables as they were before seeding).
        if self.postgres {
            sqlx::query("ANALYZE").execute(&self.pool).await?;
        }
        self.seeded = total;
        self.took += started.elapsed();
        Ok(())
    }

    /// `count` authorization codes for seeded users (round robin), all with
    /// the PKCE challenge of `verifier`; returns the codes.
    pub async fn seed_codes(
        &mut self,
        count: usize,
        shape: &GrantShape,
        verifier: &str,
        tag: &str,
    ) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(self.seeded > 0, "seed users before codes");
        let now = unix_now();
        let challenge = crate::oauth::s256(verifier);
        let codes: Vec<String> = (0..count)
            .map(|i| format!("{}bench{}{tag}x{i:06}", secret::prefix::CODE, self.run))
            .collect();
        for (n, chunk) in codes.chunks(BATCH).enumerate() {
            let rows = chunk
                .iter()
                .enumerate()
                .map(|(j, code)| {
                    let user = (n * BATCH + j) % self.seeded;
                    vec![
                        secret::hash(code).into(),
                        shape.client_id.as_str().into(),
                        self.identity(user).into(),
                        shape.redirect_uri.as_str().into(),
                        challenge.as_str().into(),
                        shape.scope.as_str().into(),
                        shape.resource.as_str().into(),
                        now.into(),
                        (now + 3600).into(),
                    ]
                })
                .collect();
            insert(
                &self.pool,
                "auth_codes (code_hash, client_id, identity_id, redirect_uri, code_challenge, scope, resource, created_at, expires_at)",
                rows,
            )
            .await?;
        }
        Ok(codes)
    }

    /// The scope and resource of a grant made by a real consent flow.
    pub async fn grant_shape_of_any(&self) -> anyhow::Result<(String, String, String)> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT client_id, scope, resource FROM grants ORDER BY created_at LIMIT 1")
            .fetch_one(&self.pool)
            .await
            .context("no grant to copy the shape of")?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// How many identities hold a connected `service` connection (the signed-up
/// users' connections, checked before anything is measured).
pub async fn connected_identities(database_url: &str, service: &str) -> anyhow::Result<usize> {
    use sqlx::Row as _;
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(database_url).await?;
    let row = sqlx::query("SELECT COUNT(DISTINCT identity_id) FROM connections WHERE service = $1 AND status = 'connected'")
        .bind(service)
        .fetch_one(&pool)
        .await;
    pool.close().await;
    let count: i64 = row?.try_get(0)?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Creates PostgreSQL database `name` at `admin_url` (its `postgres` database);
/// returns the new database's URL.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
        .execute(&pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Drops what [`create_postgres_database`] created.
pub async fn drop_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let pool = AnyPoolOptions::new().max_connections(1).connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}
