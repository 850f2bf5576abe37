//! The PostgreSQL side of `vaultctl migrate`: rows written as they were read from a SQLite
//! vault, batch by batch, each batch in one transaction with the migration's cursor.
//!
//! The cursor lives in the target (`vault_migration`), so an interrupted run (Ctrl-C, kill -9,
//! a lost connection) resumes where its last committed batch ended, and a batch is never half
//! written. The vault's metadata (its id, seal method, root-key check) is written last, in the
//! same transaction as the key table and the counters: until then the target holds no vault,
//! so no daemon can open a half-copied one.

use bytes::Bytes;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use vault_core::store::StoreError;

use super::connect::get;
use super::{PgResult, PgStore};

/// One column value, as read from SQLite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// INTEGER (or NULL).
    Int(Option<i64>),
    /// TEXT (or NULL).
    Text(Option<String>),
    /// BLOB (or NULL).
    Blob(Option<Vec<u8>>),
}

impl Value {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Text(v) => v,
            Value::Blob(v) => v,
        }
    }

    fn pg_type(&self) -> Type {
        match self {
            Value::Int(_) => Type::INT8,
            Value::Text(_) => Type::TEXT,
            Value::Blob(_) => Type::BYTEA,
        }
    }
}

/// A migration's state in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The source vault's id.
    pub source: Vec<u8>,
    /// `records`, `idempotency`, `keys` or `done`.
    pub phase: String,
    /// The last record id copied (phase `records`).
    pub last_id: i64,
    /// The last idempotency key copied (phase `idempotency`).
    pub last_key: Vec<u8>,
    /// Rows copied so far.
    pub copied: i64,
}

const CURSOR_TABLE: &str = "CREATE TABLE IF NOT EXISTS vault_migration (\
     source bytea NOT NULL, phase text NOT NULL, last_id int8 NOT NULL, \
     last_key bytea NOT NULL, copied int8 NOT NULL, updated_ms int8 NOT NULL)";

/// A table's rows, as `COPY … FROM STDIN BINARY` takes them.
#[derive(Debug)]
pub struct Rows<'a> {
    /// Table name.
    pub table: &'static str,
    /// Column names, in the order of each row's values.
    pub columns: &'a [&'static str],
    /// The rows.
    pub rows: Vec<Vec<Value>>,
}

impl PgStore {
    /// The migration's cursor, if a migration into this store has begun; and whether the store
    /// holds a vault (metadata) or records already.
    pub fn migration_state(&self) -> Result<(Option<Cursor>, bool), StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            c.batch_execute(CURSOR_TABLE).await.pg()?;
            let cursor = c
                .query_opt(
                    "SELECT source, phase, last_id, last_key, copied FROM vault_migration",
                    &[],
                )
                .await
                .pg()?
                .map(|r| Cursor {
                    source: r.get(0),
                    phase: r.get(1),
                    last_id: r.get(2),
                    last_key: r.get(3),
                    copied: r.get(4),
                });
            let used: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM meta) OR EXISTS (SELECT 1 FROM records)",
                    &[],
                )
                .await
                .pg()?
                .get(0);
            Ok((cursor, used))
        })
    }

    /// Starts a migration from the vault `source` (the target must be empty).
    pub fn migration_begin(&self, source: &[u8]) -> Result<(), StoreError> {
        let source = source.to_vec();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            c.execute(
                "INSERT INTO vault_migration (source, phase, last_id, last_key, copied, \
                 updated_ms) VALUES ($1, 'records', 0, '\\x'::bytea, 0, 0)",
                &[&source],
            )
            .await
            .pg()?;
            Ok(())
        })
    }

    /// Writes one batch of rows and moves the cursor, in one transaction.
    pub fn migration_batch(&self, rows: Rows<'_>, cursor: &Cursor) -> Result<(), StoreError> {
        let sql = format!(
            "COPY {} ({}) FROM STDIN BINARY",
            rows.table,
            rows.columns.join(", ")
        );
        let data = rows.rows;
        let cursor = cursor.clone();
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            if let Some(first) = data.first() {
                let types: Vec<Type> = first.iter().map(Value::pg_type).collect();
                let sink = tx.copy_in::<_, Bytes>(sql.as_str()).await.pg()?;
                let writer = BinaryCopyInWriter::new(sink, &types);
                let mut writer = std::pin::pin!(writer);
                for row in &data {
                    let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(Value::sql).collect();
                    writer.as_mut().write(&refs).await.pg()?;
                }
                writer.as_mut().finish().await.pg()?;
            }
            move_cursor(&tx, &cursor).await?;
            tx.commit().await.pg()?;
            Ok(())
        })
    }

    /// The last step, in one transaction: the key table, rewrap jobs, counters and metadata
    /// (refused if the target gained a vault meanwhile), and the cursor set to `done`.
    pub fn migration_finish(
        &self,
        tables: Vec<Rows<'static>>,
        counters: Vec<(String, i64)>,
        meta: Vec<(String, Vec<u8>)>,
        cursor: &Cursor,
    ) -> Result<(), StoreError> {
        let cursor = cursor.clone();
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            for rows in &tables {
                for row in &rows.rows {
                    let marks: Vec<String> = (1..=row.len()).map(|i| format!("${i}")).collect();
                    // rewrap_jobs.id is GENERATED ALWAYS: the source's ids are kept.
                    let overriding = if rows.table == "rewrap_jobs" {
                        " OVERRIDING SYSTEM VALUE"
                    } else {
                        ""
                    };
                    let sql = format!(
                        "INSERT INTO {} ({}){overriding} VALUES ({})",
                        rows.table,
                        rows.columns.join(", "),
                        marks.join(", ")
                    );
                    let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(Value::sql).collect();
                    tx.execute(sql.as_str(), &refs).await.pg()?;
                }
            }
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('rewrap_jobs', 'id'), \
                 GREATEST((SELECT max(id) FROM rewrap_jobs), 1))",
            )
            .await
            .pg()?;
            for (name, value) in &counters {
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    &[name, value],
                )
                .await
                .pg()?;
            }
            for (key, value) in &meta {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)",
                    &[key, value],
                )
                .await
                .pg()?;
            }
            move_cursor(&tx, &cursor).await?;
            tx.commit().await.pg()?;
            Ok(())
        })
    }

    /// Runs a read-only query and returns its rows as values (for verification).
    pub fn migration_query(
        &self,
        sql: &'static str,
        param: Option<i64>,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let rows = match param {
                Some(p) => c.query(sql, &[&p]).await.pg()?,
                None => c.query(sql, &[]).await.pg()?,
            };
            Ok(rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| match *r.columns()[i].type_() {
                            Type::INT8 => Value::Int(r.get(i)),
                            Type::INT4 => Value::Int(r.get::<_, Option<i32>>(i).map(i64::from)),
                            Type::BYTEA => Value::Blob(r.get(i)),
                            _ => Value::Text(r.get(i)),
                        })
                        .collect()
                })
                .collect())
        })
    }
}

async fn move_cursor(
    tx: &tokio_postgres::Transaction<'_>,
    cursor: &Cursor,
) -> Result<(), StoreError> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let n = tx
        .execute(
            "UPDATE vault_migration SET phase = $2, last_id = $3, last_key = $4, copied = $5, \
             updated_ms = $6 WHERE source = $1",
            &[
                &cursor.source,
                &cursor.phase,
                &cursor.last_id,
                &cursor.last_key,
                &cursor.copied,
                &now,
            ],
        )
        .await
        .pg()?;
    if n != 1 {
        return Err(StoreError::conflict(
            "the target's migration cursor belongs to another source vault".into(),
        ));
    }
    Ok(())
}
