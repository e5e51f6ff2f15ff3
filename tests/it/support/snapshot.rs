//! "Nothing changed": every row of every table, as text, taken before and
//! after an attack and compared. The audit log is left out, since recording a
//! refused attack is the one change a refusal should make.

use std::collections::BTreeMap;

use sqlx::Row as _;

use super::{Backend, TestDb};

/// Tables whose rows a refusal may add.
const IGNORED: &[&str] = &["audit_events", "_sqlx_migrations"];

/// Every table's rows, each rendered as one line of text, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<String, Vec<String>>);

impl Snapshot {
    /// The rows of `table`.
    pub fn rows(&self, table: &str) -> &[String] {
        self.0.get(table).map(Vec::as_slice).unwrap_or_default()
    }

    /// Asserts that `after` holds exactly the rows of `self`, naming the case
    /// and each table's added and removed rows.
    #[track_caller]
    pub fn assert_unchanged(&self, after: &Snapshot, case: &str) {
        let mut changes = Vec::new();
        for table in self.0.keys().chain(after.0.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (before, now) = (self.rows(table), after.rows(table));
            let removed: Vec<_> = before.iter().filter(|r| !now.contains(r)).collect();
            let added: Vec<_> = now.iter().filter(|r| !before.contains(r)).collect();
            if !removed.is_empty() || !added.is_empty() {
                changes.push(format!("{table}: removed {removed:?}, added {added:?}"));
            }
        }
        assert!(changes.is_empty(), "{case}: the store changed:\n{}", changes.join("\n"));
    }
}

/// Every row of every table of `db` but the audit log.
pub async fn snapshot(db: &TestDb) -> Snapshot {
    let mut raw = db.raw().await;
    let tables_sql = match db.backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
    };
    let tables: Vec<String> = sqlx::query(tables_sql)
        .fetch_all(&mut raw)
        .await
        .expect("list tables")
        .iter()
        .map(|row| row.try_get::<String, _>(0).expect("table name"))
        .filter(|name| !IGNORED.contains(&name.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let rows_sql = match db.backend {
            Backend::Sqlite => {
                let columns: Vec<String> =
                    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT name FROM pragma_table_info('{table}')")))
                        .fetch_all(&mut raw)
                        .await
                        .expect("list columns")
                        .iter()
                        .map(|row| row.try_get::<String, _>(0).expect("column name"))
                        .collect();
                let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
                format!("SELECT {} FROM \"{table}\"", quoted.join(" || ',' || "))
            }
            Backend::Postgres => format!("SELECT CAST(row_to_json(t) AS TEXT) FROM \"{table}\" AS t"),
        };
        let mut rows: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(rows_sql))
            .fetch_all(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("read {table}: {e}"))
            .iter()
            .map(|row| row.try_get::<String, _>(0).expect("row text"))
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    Snapshot(out)
}

/// `SELECT COUNT(*)` of `table`.
pub async fn count(db: &TestDb, table: &str) -> i64 {
    let mut raw = db.raw().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{table}\"")))
        .fetch_one(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .try_get::<i64, _>(0)
        .expect("a count")
}
