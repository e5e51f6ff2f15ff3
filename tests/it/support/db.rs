//! A fresh database per test: a SQLite file in a temporary directory, or a
//! PostgreSQL schema `t_<random>` in the machine's `test` database, dropped when
//! the test ends.

use std::path::PathBuf;

use sqlx::Connection as _;

/// The machine's PostgreSQL (override with `GATEHOUSE_TEST_POSTGRES_URL`).
pub fn postgres_base_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database.
pub struct TestDb {
    pub backend: Backend,
    /// The URL Gatehouse is configured with.
    pub url: String,
    /// SQLite: the file. PostgreSQL: the schema name.
    pub sqlite_file: Option<PathBuf>,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join("gatehouse.db");
                Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", file.display()),
                    sqlite_file: Some(file),
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Self::postgres().await.expect("PostgreSQL test database"),
        }
    }

    /// A PostgreSQL schema, or `None` (with a loud message) when PostgreSQL is
    /// unreachable outside CI. Under `CI=true` an unreachable server fails the test.
    pub async fn postgres_or_skip() -> Option<Self> {
        match Self::postgres().await {
            Ok(db) => Some(db),
            Err(err) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true and PostgreSQL at {} is unreachable: {err}", postgres_base_url())
            }
            Err(err) => {
                eprintln!(
                    "\n!!!!!!!!!! SKIPPING the PostgreSQL run of this test: {} is unreachable ({err}). \
                     CI fails here; start PostgreSQL to run it. !!!!!!!!!!\n",
                    postgres_base_url()
                );
                None
            }
        }
    }

    async fn postgres() -> Result<Self, sqlx::Error> {
        let base = postgres_base_url();
        let schema = format!("t_{}", random_hex(12));
        let mut conn = sqlx::PgConnection::connect(&base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let separator = if base.contains('?') { '&' } else { '?' };
        Ok(Self {
            backend: Backend::Postgres,
            url: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
            sqlite_file: None,
            schema: Some(schema),
            _dir: None,
        })
    }

    /// Every byte the database holds, as text an attacker with a dump would see:
    /// the SQLite file with its WAL, or a `pg_dump` of the schema.
    pub fn raw_dump(&self) -> Vec<u8> {
        match self.backend {
            Backend::Sqlite => {
                let file = self.sqlite_file.as_ref().expect("sqlite file");
                let mut bytes = std::fs::read(file).expect("read sqlite file");
                for suffix in ["-wal", "-shm", "-journal"] {
                    let mut side = file.clone().into_os_string();
                    side.push(suffix);
                    if let Ok(more) = std::fs::read(&side) {
                        bytes.extend_from_slice(&more);
                    }
                }
                bytes
            }
            Backend::Postgres => {
                let schema = self.schema.as_ref().expect("schema");
                let output = std::process::Command::new("pg_dump")
                    .arg(postgres_base_url())
                    .arg("--schema")
                    .arg(schema)
                    .output()
                    .expect("run pg_dump");
                assert!(
                    output.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                output.stdout
            }
        }
    }

    /// A raw connection for tampering and inspection.
    pub async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.url).await.expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else { return };
        // Drop runs outside async; a short-lived thread with its own runtime drops the schema.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_base_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Random lowercase hex of `n` characters.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..n].to_string()
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}
