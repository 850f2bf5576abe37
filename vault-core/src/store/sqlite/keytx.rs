//! What key-table writes share: the generation counter, the active-version check, meta rows, id reservations, version rows and the counts that guard a retirement.

use super::*;
use crate::keys::State;

/// Milliseconds since the Unix epoch: the store's clock for rewrap leases (one host).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Marks the key table changed, in the caller's transaction ([`Store::keys_generation`]).
pub(super) fn bump_key_generation(c: &Connection) -> Result<(), Failure> {
    c.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = 'key_generation'")?
        .execute([])?;
    Ok(())
}

/// Refuses a record under a key version the table holds in another state than `active`.
pub(super) fn require_active(c: &Connection, name: &str, version: u32) -> Result<(), Failure> {
    let state: Option<State> = c
        .prepare_cached("SELECT state FROM key_versions WHERE name = ?1 AND version = ?2")?
        .query_row(params![name, version], |r| r.get(0))
        .optional()?;
    match state {
        Some(State::Active) | None => Ok(()),
        Some(_) => Err(StoreError::KeyNotActive {
            name: name.to_owned(),
            version,
        }
        .into()),
    }
}

pub(super) fn owned_meta(entries: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

pub(super) fn put_meta(c: &Connection, entries: &[(String, Vec<u8>)]) -> Result<(), Failure> {
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (k, v) in entries {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

/// Reserves `n` ids from the persisted counter.
pub(super) fn reserve_ids(c: &Connection, n: u64) -> Result<Range<u64>, Failure> {
    let end: Option<u64> = c
        .prepare_cached(
            "UPDATE counters SET value = value + ?1 \
             WHERE name = 'record_id' AND value <= ?2 - ?1 RETURNING value",
        )?
        .query_row(params![n, i64::MAX], |r| r.get(0))
        .optional()?;
    let end = end.ok_or_else(|| StoreError::conflict("record ids exhausted".into()))?;
    Ok(end - n..end)
}

pub(super) fn not_found_or_conflict(
    c: &Connection,
    exists_sql: &str,
    p: impl rusqlite::Params,
    what: &str,
) -> Failure {
    match c.query_row(exists_sql, p, |_| Ok(())).optional() {
        Ok(Some(())) => StoreError::conflict(format!("{what}: current state differs")).into(),
        Ok(None) => StoreError::not_found(what.to_owned()).into(),
        Err(e) => e.into(),
    }
}

pub(super) fn insert_version(c: &Connection, v: &KeyVersionRow) -> Result<(), Failure> {
    c.prepare_cached(
        "INSERT INTO key_versions (name, version, state, wrapped, nonce_count, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        v.name,
        v.version,
        v.state,
        v.wrapped,
        v.nonce_count,
        v.created_at,
        v.updated_at
    ])?;
    Ok(())
}

/// A version may be retired only when nothing stored is left under it (ARCHITECTURE.md, key
/// version state machine). Data keys are named `data/<template>` and fingerprint keys
/// `fp/<template>`; other purposes protect no rows.
pub(super) fn refuse_retire_with_data(
    c: &Connection,
    name: &str,
    version: u32,
) -> Result<(), Failure> {
    let purpose: Option<String> = c
        .prepare_cached("SELECT purpose FROM key_names WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let left = match purpose.as_deref() {
        Some("data") => match name.strip_prefix("data/") {
            Some(t) => count_key_version(c, t, version)?,
            None => 0,
        },
        Some("fingerprint") => match name.strip_prefix("fp/") {
            Some(t) => count_fp_version(c, t, version)?,
            None => 0,
        },
        _ => 0,
    };
    if left > 0 {
        return Err(StoreError::conflict(format!(
            "{left} records are still stored under this version"
        ))
        .into());
    }
    Ok(())
}

pub(super) fn count_key_version(c: &Connection, template: &str, v: u32) -> rusqlite::Result<u64> {
    Ok(c.prepare_cached(
        "SELECT count FROM version_counts WHERE template = ?1 AND key_version = ?2",
    )?
    .query_row(params![template, v], |r| r.get(0))
    .optional()?
    .unwrap_or(0))
}

pub(super) fn count_fp_version(c: &Connection, template: &str, v: u32) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "SELECT count(*) FROM records \
         WHERE template = ?1 AND fp_version = ?2 AND fingerprint IS NOT NULL",
    )?
    .query_row(params![template, v], |r| r.get(0))
}
