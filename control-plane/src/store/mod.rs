//! The store: every piece of Gatehouse state, in SQLite (default) or PostgreSQL.
//!
//! Owns: the connection pool, migrations (`migrations/sqlite`, `migrations/postgres`,
//! chosen by the URL's scheme) and all SQL. Nothing outside this module writes SQL.
//! Never holds a plaintext secret: issued secrets arrive hashed, upstream secrets
//! arrive sealed by `vault`.
//!
//! Queries use `$1` placeholders, which both backends accept through sqlx's Any
//! driver; booleans are integers and times Unix seconds, which both store alike.

pub mod audit;
pub mod clients;
pub mod connections;
pub mod flows;
pub mod gateway;
pub mod grants;
pub mod identities;
pub mod mcp_servers;
pub mod notify;
pub mod reseal;
pub mod sweep;
pub mod upstream;
pub mod virtual_keys;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:… or postgres://…): {0}")]
    UnsupportedUrl(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, by its scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// The store: a pool and its backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL, for the dedicated `LISTEN` connection (PostgreSQL only); may hold a password.
    url: crate::secret::Secret,
}

impl Store {
    /// Connects and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url)?;
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // Order: WAL and a busy timeout before any query, so readers never
            // block the writer and concurrent writers wait instead of failing.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    // Reads through a shared memory map instead of a read(2)
                    // into each connection's own 2 MB page cache: with 100,000
                    // users the hot lookups (token → grant → identity,
                    // connection) miss that cache, and the reads and copies
                    // made ResolveAccessToken cost up to 1.8× its CPU at 1,000.
                    sqlx::query("PRAGMA mmap_size = 268435456").execute(&mut *conn).await?;
                    Ok(())
                })
            });
            ensure_sqlite_parent_dir(url);
        }
        let pool = options.connect(url).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            url: crate::secret::Secret::new(url),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks the database answers (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Creates the directory of a `sqlite:` file URL, so a fresh data directory works.
fn ensure_sqlite_parent_dir(url: &str) {
    if let Ok(options) = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        && let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(parent);
    }
}

/// A database URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

// === Row helpers shared by the submodules ===

pub(crate) fn get_str(row: &AnyRow, column: &str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

pub(crate) fn get_opt_str(row: &AnyRow, column: &str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

pub(crate) fn get_i64(row: &AnyRow, column: &str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

pub(crate) fn get_opt_i64(row: &AnyRow, column: &str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

pub(crate) fn get_opt_bytes(row: &AnyRow, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(row.try_get::<Option<Vec<u8>>, _>(column)?)
}

/// Whether an error is a uniqueness violation (a name or key already taken).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled SQLite connection carries the settings `connect` gives it,
    /// the read path's memory map among them (BENCHMARKS.md: without it a
    /// resolve costs more as the vault grows).
    #[tokio::test]
    async fn every_sqlite_connection_gets_wal_the_busy_timeout_foreign_keys_and_the_memory_map() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/gatehouse.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        // More connections than one, so each is checked, not only the first.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool().acquire().await.unwrap();
            let pragma = |name: &'static str| sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")));
            let journal: String = pragma("journal_mode").fetch_one(&mut *conn).await.unwrap().get(0);
            let busy: i64 = pragma("busy_timeout").fetch_one(&mut *conn).await.unwrap().get(0);
            let foreign: i64 = pragma("foreign_keys").fetch_one(&mut *conn).await.unwrap().get(0);
            let mmap: i64 = pragma("mmap_size").fetch_one(&mut *conn).await.unwrap().get(0);
            assert_eq!((journal.as_str(), busy, foreign, mmap), ("wal", 10_000, 1, 268_435_456));
            held.push(conn);
        }
        drop(held);
        store.close().await;
    }
}
