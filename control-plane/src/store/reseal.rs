//! Re-sealing every stored ciphertext under the vault's active key (key rotation).
//!
//! Each sealed table is described once here: its primary key, the SQL that
//! yields the owner and service parts of the associated data, and its sealed
//! columns. Rows are updated one at a time with a compare-and-swap on `key_id`,
//! so rotation runs while the service writes and never loses a newer value.

use sqlx::Row as _;

use super::{Store, StoreError, get_opt_bytes, get_str};
use crate::vault::{Aad, Vault, VaultError};

struct SealedTable {
    table: &'static str,
    pk: &'static str,
    owner_sql: &'static str,
    service_sql: &'static str,
    columns: &'static [&'static str],
}

/// Every table holding vault ciphertext.
const SEALED_TABLES: &[SealedTable] = &[
    SealedTable {
        table: "connections",
        pk: "id",
        owner_sql: "COALESCE(identity_id, 'flow:' || flow_id, '')",
        service_sql: "service",
        columns: &["access_ct", "refresh_ct"],
    },
    SealedTable {
        table: "upstream_attempts",
        pk: "state_hash",
        owner_sql: "''",
        service_sql: "service",
        columns: &["verifier_ct"],
    },
    SealedTable {
        table: "upstream_clients",
        pk: "service",
        owner_sql: "''",
        service_sql: "service",
        columns: &["secret_ct"],
    },
    SealedTable {
        table: "shared_keys",
        pk: "id",
        owner_sql: "''",
        service_sql: "purpose",
        columns: &["key_ct"],
    },
];

/// The associated data for a value of a sealed table (the one definition the
/// write paths and re-sealing share for tables without their own module helper).
pub fn aad<'a>(table: &'static str, field: &'static str, row_id: &'a str, owner: &'a str, service: &'a str) -> Aad<'a> {
    Aad {
        table,
        field,
        row_id,
        identity: owner,
        service,
    }
}

/// Outcome of a re-seal pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealReport {
    /// Rows now sealed under the active key.
    pub resealed: u64,
    /// Rows that would not open (logged, left as they are).
    pub failed: u64,
}

const BATCH: i64 = 200;

impl Store {
    /// Re-seals every row not yet under the vault's active key.
    pub async fn reseal_all(&self, vault: &Vault) -> Result<ResealReport, StoreError> {
        let active = vault.active_key_id();
        let mut report = ResealReport::default();
        for t in SEALED_TABLES {
            let columns = t.columns.join(", ");
            let select = format!(
                "SELECT {pk} AS pk, {owner} AS owner, {service} AS service, key_id, {columns} FROM {table}
                 WHERE key_id IS NOT NULL AND key_id <> $1 AND {pk} > $2 ORDER BY {pk} LIMIT $3",
                pk = t.pk,
                owner = t.owner_sql,
                service = t.service_sql,
                table = t.table,
            );
            let sets = t
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ${}", i + 4))
                .collect::<Vec<_>>()
                .join(", ");
            let update = format!(
                "UPDATE {table} SET key_id = $1, {sets} WHERE {pk} = $2 AND key_id = $3",
                table = t.table,
                pk = t.pk
            );
            let mut after = String::new();
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                    .bind(&active)
                    .bind(&after)
                    .bind(BATCH)
                    .fetch_all(self.pool())
                    .await?;
                let Some(last) = rows.last() else { break };
                after = get_str(last, "pk")?;
                for row in &rows {
                    let pk = get_str(row, "pk")?;
                    let owner = get_str(row, "owner")?;
                    let service = get_str(row, "service")?;
                    let old_key = get_str(row, "key_id")?;
                    let mut resealed: Vec<Option<Vec<u8>>> = Vec::with_capacity(t.columns.len());
                    let mut ok = true;
                    for column in t.columns {
                        let Some(blob) = get_opt_bytes(row, column)? else {
                            resealed.push(None);
                            continue;
                        };
                        let aad = aad(t.table, column, &pk, &owner, &service);
                        match reseal_value(vault, aad, &blob) {
                            Ok(new) => resealed.push(Some(new)),
                            Err(err) => {
                                tracing::error!(target: "gatehouse::vault", table = t.table, column = *column, row = %pk, error = %err, "stored value does not open; left as it is");
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok {
                        report.failed += 1;
                        continue;
                    }
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(&active)
                        .bind(&pk)
                        .bind(&old_key);
                    for value in resealed {
                        query = query.bind(value);
                    }
                    if query.execute(self.pool()).await?.rows_affected() > 0 {
                        report.resealed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// How many rows each vault key seals, by key id.
    pub async fn count_sealed_by_key(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        for t in SEALED_TABLES {
            let sql = format!(
                "SELECT key_id, COUNT(*) AS n FROM {} WHERE key_id IS NOT NULL GROUP BY key_id",
                t.table
            );
            for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await? {
                let key_id = get_str(&row, "key_id")?;
                let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                match counts.iter_mut().find(|(k, _)| *k == key_id) {
                    Some((_, total)) => *total += n,
                    None => counts.push((key_id, n)),
                }
            }
        }
        Ok(counts)
    }
}

fn reseal_value(vault: &Vault, aad: Aad<'_>, blob: &[u8]) -> Result<Vec<u8>, VaultError> {
    let plaintext = vault.open(aad, blob)?;
    Ok(vault.seal(aad, &plaintext)?.blob)
}
