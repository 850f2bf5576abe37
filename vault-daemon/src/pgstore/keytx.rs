//! What key-table transactions share: the advisory lock per key version, the generation counter, meta rows, version rows and the counts that guard a retirement.

use super::*;

pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Takes a key version's lock exclusively for the transaction: inserts under it hold it shared
/// (`vault_insert_guard`), so a state change waits for inserts in flight to commit, and inserts
/// after it see the new state.
pub(super) async fn lock_key_version(
    tx: &Tx<'_>,
    name: &str,
    version: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1::text), ($2::int8)::int4)",
        &[&name, &version],
    )
    .await
    .pg()?;
    Ok(())
}

pub(super) async fn bump_key_generation(tx: &Tx<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'key_generation'",
        &[],
    )
    .await
    .pg()?;
    Ok(())
}

/// `Conflict` if the row exists (its state differs), else `NotFound`.
pub(super) async fn not_found_or_conflict(
    tx: &Tx<'_>,
    exists_sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> StoreError {
    match tx.query_opt(exists_sql, params).await {
        Ok(Some(_)) => StoreError::conflict(format!("{what}: current state differs")),
        Ok(None) => StoreError::not_found(what.to_owned()),
        Err(e) => map_pg(e),
    }
}

pub(super) async fn count_key_version(
    c: &impl deadpool_postgres::GenericClient,
    template: &str,
    version: i64,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*) FROM records WHERE template = $1 AND key_version = $2",
            &[&template, &version],
        )
        .await
        .pg()?;
    u64_of(row.get(0))
}

pub(super) async fn count_fp_version(
    c: &impl deadpool_postgres::GenericClient,
    template: &str,
    version: i64,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*) FROM records WHERE template = $1 AND fp_version = $2 \
             AND fingerprint IS NOT NULL",
            &[&template, &version],
        )
        .await
        .pg()?;
    u64_of(row.get(0))
}

pub(super) async fn put_meta(tx: &Tx<'_>, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .await
        .pg()?;
    for (k, v) in entries {
        tx.execute(&stmt, &[k, v]).await.pg()?;
    }
    Ok(())
}

pub(super) fn owned_meta(entries: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

pub(super) async fn insert_version(tx: &Tx<'_>, v: &KeyVersionRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO key_versions (name, version, state, wrapped, nonce_count, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &v.name,
            &i64::from(v.version),
            &v.state.as_str(),
            &v.wrapped,
            &i64_of(v.nonce_count)?,
            &v.created_at,
            &v.updated_at,
        ],
    )
    .await
    .pg()?;
    Ok(())
}
