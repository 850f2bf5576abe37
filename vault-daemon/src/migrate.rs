//! `vaultctl migrate`: a stopped SQLite vault copied into an empty PostgreSQL vault, resumable,
//! and verified at the end.
//!
//! What is copied is every table the vault needs, as stored (ciphertext, wrapped keys, keyed
//! hashes; nothing is decrypted): records with their fingerprints, lookup hashes and check
//! values, idempotency keys, the key table with states and nonce counters, rewrap jobs with
//! their cursors, the record-id and key-generation counters, and the metadata (vault id, seal
//! method, root-key check). SQLite's `version_counts` is not: PostgreSQL counts with an index.
//!
//! Order, so that an interruption at any point loses nothing and exposes nothing: records in
//! id order, then idempotency keys, each batch in one PostgreSQL transaction with the cursor
//! (`pgstore::import`); then the key table, jobs, counters and metadata in one last
//! transaction. A daemon started on the target before that sees no vault.
//!
//! The source must be stopped: a running daemon would keep writing after its rows were copied.
//! The command holds SQLite's exclusive lock on it for the whole run, so it is refused while a
//! daemon has the vault open, and a daemon started meanwhile cannot open it.
//!
//! Verification reads both sides again: record counts per (template, key version), and one
//! HMAC-SHA256 over every record, every idempotency key and every key version in a canonical
//! encoding, under a key drawn for this run (so the checksums printed reveal nothing about the
//! rows).

use std::path::Path;
use std::time::Instant;

use ring::hmac;
use rusqlite::{Connection, OpenFlags};
use vault_core::store::StoreError;

use crate::pgstore::PgStore;
use crate::pgstore::import::{Cursor, Rows, Value};

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The source cannot be read, or is not a stopped vault.
    #[error("source: {0}")]
    Source(String),
    /// The target refused, or is not empty.
    #[error("target: {0}")]
    Target(String),
    /// A storage call failed (the run can be resumed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The verification found a difference.
    #[error("verification failed: {0}")]
    Mismatch(String),
}

fn source_err(e: rusqlite::Error) -> MigrateError {
    MigrateError::Source(e.to_string())
}

/// Where a run stands, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Records copied so far (this run and earlier ones).
    pub records: u64,
    /// Records in the source.
    pub total: u64,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
}

/// What a finished migration found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Records in both stores.
    pub records: u64,
    /// Records per (template, key version), equal on both sides.
    pub per_version: Vec<(String, i64, i64)>,
    /// Idempotency keys.
    pub idempotency: u64,
    /// Key versions.
    pub key_versions: u64,
    /// The keyed checksum (hex), equal on both sides.
    pub checksum: String,
    /// Records copied by this run.
    pub copied_now: u64,
    /// Seconds this run spent copying.
    pub copy_secs: f64,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
}

const RECORD_COLUMNS: [&str; 11] = [
    "id",
    "template",
    "key_version",
    "ciphertext",
    "expires_at",
    "metadata",
    "fp_version",
    "fingerprint",
    "lookup",
    "created_at",
    "token_check",
];
const IDEMPOTENCY_COLUMNS: [&str; 3] = ["key", "record_id", "request"];
const KEY_NAME_COLUMNS: [&str; 4] = ["name", "purpose", "min_decrypt_version", "created_at"];
const KEY_VERSION_COLUMNS: [&str; 7] = [
    "name",
    "version",
    "state",
    "wrapped",
    "nonce_count",
    "created_at",
    "updated_at",
];
const JOB_COLUMNS: [&str; 12] = [
    "id",
    "template",
    "target_version",
    "target_fp_version",
    "state",
    "cursor",
    "processed",
    "created_at",
    "updated_at",
    "owner",
    "lease_until_ms",
    "lease_ms",
];

/// Reads a SQLite row into values, by each column's declared kind.
fn row_values(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Vec<Value>> {
    use rusqlite::types::ValueRef;
    (0..n)
        .map(|i| {
            Ok(match row.get_ref(i)? {
                ValueRef::Null => Value::Int(None),
                ValueRef::Integer(v) => Value::Int(Some(v)),
                ValueRef::Real(v) => Value::Text(Some(v.to_string())),
                ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
                ValueRef::Blob(b) => Value::Blob(Some(b.to_vec())),
            })
        })
        .collect()
}

/// NULLs read as `Int(None)`; COPY needs each column's own type. `kinds` gives it per column:
/// `i` int, `t` text, `b` blob.
fn typed(mut row: Vec<Value>, kinds: &str) -> Vec<Value> {
    for (v, k) in row.iter_mut().zip(kinds.chars()) {
        if *v == Value::Int(None) {
            *v = match k {
                't' => Value::Text(None),
                'b' => Value::Blob(None),
                _ => Value::Int(None),
            };
        }
    }
    row
}

const RECORD_KINDS: &str = "itibitibbii";
const IDEMPOTENCY_KINDS: &str = "bib";
const KEY_NAME_KINDS: &str = "ttii";
const KEY_VERSION_KINDS: &str = "titbiii";
const JOB_KINDS: &str = "itiitiiiitii";

fn select_all(
    conn: &Connection,
    sql: &str,
    n: usize,
    kinds: &str,
) -> Result<Vec<Vec<Value>>, MigrateError> {
    let mut stmt = conn.prepare(sql).map_err(source_err)?;
    let rows = stmt
        .query_map([], |r| row_values(r, n))
        .map_err(source_err)?
        .map(|r| r.map(|v| typed(v, kinds)))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(source_err)?;
    Ok(rows)
}

/// Opens the source for the whole run with an exclusive lock (SQLite's `locking_mode =
/// EXCLUSIVE`): refused at once while any other connection, a running vaultd's, has the vault
/// open, and a vaultd started meanwhile cannot open it until the copy is done. Nothing is
/// written to it (a WAL left by a crash is checkpointed first, as any open would).
fn open_source(db: &Path) -> Result<Connection, MigrateError> {
    if !db.is_file() {
        return Err(MigrateError::Source(format!(
            "no vault database at {}",
            db.display()
        )));
    }
    let conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(source_err)?;
    conn.busy_timeout(std::time::Duration::ZERO)
        .map_err(source_err)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(source_err)?;
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                MigrateError::Source(format!(
                    "{} is in use: stop vaultd (and any other process on it) first",
                    db.display()
                ))
            }
            _ => source_err(e),
        })?;
    Ok(conn)
}

fn vault_id(conn: &Connection) -> Result<Vec<u8>, MigrateError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'vault_id'", [], |r| {
        r.get(0)
    })
    .map_err(|_| MigrateError::Source("not a vault database (no vault id)".into()))
}

/// Copies (or resumes copying) the SQLite vault `db` into `target`, then verifies.
pub fn migrate(
    db: &Path,
    target: &PgStore,
    batch: usize,
    mut progress: impl FnMut(Progress),
) -> Result<Report, MigrateError> {
    let src = open_source(db)?;
    let id = vault_id(&src)?;
    let total: i64 = src
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .map_err(source_err)?;
    let total = u64::try_from(total).unwrap_or(0);
    let (cursor, used) = target.migration_state()?;
    let mut cursor = match cursor {
        Some(c) if c.source != id => {
            return Err(MigrateError::Target(
                "it holds a migration from another vault".into(),
            ));
        }
        Some(c) => c,
        None if used => {
            return Err(MigrateError::Target(
                "it is not empty (a vault or records): migrate into an empty database or schema"
                    .into(),
            ));
        }
        None => {
            target.migration_begin(&id)?;
            Cursor {
                source: id.clone(),
                phase: "records".into(),
                last_id: 0,
                last_key: Vec::new(),
                copied: 0,
            }
        }
    };
    let resumed = cursor.copied > 0 || cursor.phase != "records";
    let copied_before = u64::try_from(cursor.copied).unwrap_or(0);
    let started = Instant::now();
    let batch = batch.clamp(1, 100_000);
    let limit = i64::try_from(batch).unwrap_or(5_000);

    if cursor.phase == "records" {
        let mut stmt = src
            .prepare(&format!(
                "SELECT {} FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
                RECORD_COLUMNS.join(", ")
            ))
            .map_err(source_err)?;
        loop {
            let rows = stmt
                .query_map(rusqlite::params![cursor.last_id, limit], |r| {
                    row_values(r, RECORD_COLUMNS.len())
                })
                .map_err(source_err)?
                .map(|r| r.map(|v| typed(v, RECORD_KINDS)))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(source_err)?;
            let Some(Value::Int(Some(last))) = rows.last().and_then(|r| r.first()).cloned() else {
                break;
            };
            cursor.last_id = last;
            cursor.copied += i64::try_from(rows.len()).unwrap_or(0);
            target.migration_batch(
                Rows {
                    table: "records",
                    columns: &RECORD_COLUMNS,
                    rows,
                },
                &cursor,
            )?;
            progress(Progress {
                records: u64::try_from(cursor.copied).unwrap_or(0),
                total,
                resumed,
            });
        }
        cursor.phase = "idempotency".into();
        target.migration_batch(
            Rows {
                table: "records",
                columns: &RECORD_COLUMNS,
                rows: Vec::new(),
            },
            &cursor,
        )?;
    }
    let copied_now = u64::try_from(cursor.copied)
        .unwrap_or(0)
        .saturating_sub(copied_before);
    let copy_secs = started.elapsed().as_secs_f64();

    if cursor.phase == "idempotency" {
        let mut stmt = src
            .prepare(&format!(
                "SELECT {} FROM idempotency WHERE key > ?1 ORDER BY key LIMIT ?2",
                IDEMPOTENCY_COLUMNS.join(", ")
            ))
            .map_err(source_err)?;
        loop {
            let rows = stmt
                .query_map(rusqlite::params![cursor.last_key, limit], |r| {
                    row_values(r, IDEMPOTENCY_COLUMNS.len())
                })
                .map_err(source_err)?
                .map(|r| r.map(|v| typed(v, IDEMPOTENCY_KINDS)))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(source_err)?;
            let Some(Value::Blob(Some(last))) = rows.last().and_then(|r| r.first()).cloned() else {
                break;
            };
            cursor.last_key = last;
            target.migration_batch(
                Rows {
                    table: "idempotency",
                    columns: &IDEMPOTENCY_COLUMNS,
                    rows,
                },
                &cursor,
            )?;
        }
        cursor.phase = "keys".into();
        target.migration_batch(
            Rows {
                table: "idempotency",
                columns: &IDEMPOTENCY_COLUMNS,
                rows: Vec::new(),
            },
            &cursor,
        )?;
    }

    if cursor.phase == "keys" {
        let names = select_all(
            &src,
            &format!("SELECT {} FROM key_names", KEY_NAME_COLUMNS.join(", ")),
            KEY_NAME_COLUMNS.len(),
            KEY_NAME_KINDS,
        )?;
        let versions = select_all(
            &src,
            &format!(
                "SELECT {} FROM key_versions",
                KEY_VERSION_COLUMNS.join(", ")
            ),
            KEY_VERSION_COLUMNS.len(),
            KEY_VERSION_KINDS,
        )?;
        let jobs = select_all(
            &src,
            &format!("SELECT {} FROM rewrap_jobs", JOB_COLUMNS.join(", ")),
            JOB_COLUMNS.len(),
            JOB_KINDS,
        )?;
        let counters = select_all(&src, "SELECT name, value FROM counters", 2, "ti")?
            .into_iter()
            .filter_map(|r| match (&r[0], &r[1]) {
                (Value::Text(Some(n)), Value::Int(Some(v))) => Some((n.clone(), *v)),
                _ => None,
            })
            .collect();
        let meta = select_all(&src, "SELECT key, value FROM meta", 2, "tb")?
            .into_iter()
            .filter_map(|r| match (&r[0], &r[1]) {
                (Value::Text(Some(k)), Value::Blob(Some(v))) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        cursor.phase = "done".into();
        target
            .migration_finish(
                vec![
                    Rows {
                        table: "key_names",
                        columns: &KEY_NAME_COLUMNS,
                        rows: names,
                    },
                    Rows {
                        table: "key_versions",
                        columns: &KEY_VERSION_COLUMNS,
                        rows: versions,
                    },
                    Rows {
                        table: "rewrap_jobs",
                        columns: &JOB_COLUMNS,
                        rows: jobs,
                    },
                ],
                counters,
                meta,
                &cursor,
            )
            .map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    MigrateError::Target("a vault appeared in the target meanwhile".into())
                }
                e => e.into(),
            })?;
    }
    let mut report = verify(&src, target)?;
    report.copied_now = copied_now;
    report.copy_secs = copy_secs;
    report.resumed = resumed;
    Ok(report)
}

/// One canonical encoding per value: a kind byte, then a length-prefixed body (NULL: kind 0).
fn feed(ctx: &mut hmac::Context, v: &Value) {
    let (kind, body): (u8, Vec<u8>) = match v {
        Value::Int(None) | Value::Text(None) | Value::Blob(None) => (0, Vec::new()),
        Value::Int(Some(i)) => (1, i.to_be_bytes().to_vec()),
        Value::Text(Some(t)) => (2, t.as_bytes().to_vec()),
        Value::Blob(Some(b)) => (3, b.clone()),
    };
    ctx.update(&[kind]);
    ctx.update(&u64::try_from(body.len()).unwrap_or(0).to_be_bytes());
    ctx.update(&body);
}

/// Normalises NULLs so that both sides compare equal (SQLite's untyped NULL, PostgreSQL's typed).
fn norm(v: Value) -> Value {
    match v {
        Value::Text(None) | Value::Blob(None) => Value::Int(None),
        v => v,
    }
}

/// Counts per (template, key version) and a keyed checksum over both stores.
fn verify(src: &Connection, target: &PgStore) -> Result<Report, MigrateError> {
    let counts_sql = "SELECT template, key_version, count(*) FROM records \
                      GROUP BY template, key_version ORDER BY template, key_version";
    let a: Vec<Vec<Value>> = select_all(src, counts_sql, 3, "tii")?;
    let b = target.migration_query(
        "SELECT template, key_version, count(*) FROM records \
         GROUP BY template, key_version ORDER BY template, key_version",
        None,
    )?;
    let per_version: Vec<(String, i64, i64)> = a
        .iter()
        .filter_map(|r| match (&r[0], &r[1], &r[2]) {
            (Value::Text(Some(t)), Value::Int(Some(v)), Value::Int(Some(n))) => {
                Some((t.clone(), *v, *n))
            }
            _ => None,
        })
        .collect();
    if a != b {
        return Err(MigrateError::Mismatch(format!(
            "records per template and key version differ: SQLite {per_version:?}, PostgreSQL \
             {} groups",
            b.len()
        )));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| MigrateError::Source("the RNG failed".into()))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut sides = [hmac::Context::with_key(&key), hmac::Context::with_key(&key)];
    // Records in id order, in pages on both sides.
    let cols = RECORD_COLUMNS.join(", ");
    let mut stmt = src
        .prepare(&format!(
            "SELECT {cols} FROM records WHERE id > ?1 ORDER BY id LIMIT 10000"
        ))
        .map_err(source_err)?;
    let mut last = 0i64;
    loop {
        let rows = stmt
            .query_map([last], |r| row_values(r, RECORD_COLUMNS.len()))
            .map_err(source_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(source_err)?;
        let Some(Value::Int(Some(l))) = rows.last().and_then(|r| r.first()).cloned() else {
            break;
        };
        let theirs = target.migration_query(
            "SELECT id, template, key_version, ciphertext, expires_at, metadata, fp_version, \
             fingerprint, lookup, created_at, token_check FROM records WHERE id > $1 \
             ORDER BY id LIMIT 10000",
            Some(last),
        )?;
        for (side, rows) in [(0usize, rows), (1, theirs)] {
            for row in rows {
                for v in row {
                    feed(&mut sides[side], &norm(v));
                }
            }
        }
        last = l;
    }
    let records_total: i64 = src
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .map_err(source_err)?;
    for (sql_a, sql_b, n) in [
        (
            "SELECT key, record_id, request FROM idempotency ORDER BY key",
            "SELECT key, record_id, request FROM idempotency ORDER BY key",
            3,
        ),
        (
            "SELECT name, version, state, wrapped, nonce_count FROM key_versions \
             ORDER BY name, version",
            "SELECT name, version, state, wrapped, nonce_count FROM key_versions \
             ORDER BY name, version",
            5,
        ),
    ] {
        for row in select_all(src, sql_a, n, "")? {
            for v in row {
                feed(&mut sides[0], &norm(v));
            }
        }
        for row in target.migration_query(sql_b, None)? {
            for v in row {
                feed(&mut sides[1], &norm(v));
            }
        }
    }
    let [a, b] = sides;
    let (a, b) = (
        hex::encode(a.sign().as_ref()),
        hex::encode(b.sign().as_ref()),
    );
    if a != b {
        return Err(MigrateError::Mismatch(
            "the keyed checksums of records, idempotency keys and key versions differ".into(),
        ));
    }
    let count = |sql: &str| -> Result<u64, MigrateError> {
        src.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(source_err)
    };
    Ok(Report {
        records: u64::try_from(records_total).unwrap_or(0),
        per_version,
        idempotency: count("SELECT count(*) FROM idempotency")?,
        key_versions: count("SELECT count(*) FROM key_versions")?,
        checksum: a,
        copied_now: 0,
        copy_secs: 0.0,
        resumed: false,
    })
}
