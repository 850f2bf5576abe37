//! Forward-only PostgreSQL migrations, versioned like the SQLite ones.
//!
//! [`MIGRATIONS`] is append-only: a released entry is never edited, a change is a new entry.
//! The version lives in `vault_schema`; all pending entries run in one transaction together
//! with the version bump, under a transaction-scoped advisory lock, so daemons starting at once
//! migrate once and a crash mid-upgrade leaves the previous version intact. A database whose
//! version is above [`current`] was written by newer code and is refused.
//!
//! The tables mirror SQLite's schema v4 (`vault_core::store::sqlite`), with differences for
//! many writers: records are counted per key version by an index (`records_version`) instead of
//! SQLite's `version_counts` table, whose rows every insert would update from every daemon; the
//! insert checks are a function (`vault_insert_guard`); `rewrap_jobs.id` is an identity column.

use vault_core::store::StoreError;

use super::{PgResult, map_pg};

/// Advisory lock key for migrations ("vault" in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6175_6c74;

/// Every migration, in order. Append only.
pub(super) const MIGRATIONS: &[&str] = &[
    // v1: everything SQLite reached in its v4.
    r#"
    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value bytea NOT NULL
    );

    CREATE TABLE key_names (
        name                text PRIMARY KEY,
        purpose             text NOT NULL,
        min_decrypt_version int8 NOT NULL CHECK (min_decrypt_version >= 0),
        created_at          int8 NOT NULL
    );

    CREATE TABLE key_versions (
        name        text NOT NULL REFERENCES key_names (name),
        version     int8 NOT NULL CHECK (version >= 1),
        state       text NOT NULL
                    CHECK (state IN ('active', 'decrypt_only', 'retired', 'destroyed')),
        wrapped     bytea,
        nonce_count int8 NOT NULL CHECK (nonce_count >= 0),
        created_at  int8 NOT NULL,
        updated_at  int8 NOT NULL,
        PRIMARY KEY (name, version)
    );

    CREATE TABLE counters (
        name  text PRIMARY KEY,
        value int8 NOT NULL
    );
    -- Record ids start at 1; 0 means "none" in the API.
    INSERT INTO counters (name, value) VALUES ('record_id', 1), ('key_generation', 1);

    CREATE TABLE records (
        id          int8 PRIMARY KEY,
        template    text NOT NULL,
        key_version int8 NOT NULL,
        ciphertext  bytea NOT NULL,
        expires_at  int8,
        metadata    text,
        fp_version  int8,
        fingerprint bytea,
        lookup      bytea,
        created_at  int8 NOT NULL,
        CHECK ((fp_version IS NULL) = (fingerprint IS NULL))
    );
    CREATE UNIQUE INDEX records_fingerprint ON records (template, fp_version, fingerprint)
        WHERE fingerprint IS NOT NULL;
    CREATE UNIQUE INDEX records_lookup ON records (template, lookup)
        WHERE lookup IS NOT NULL;
    CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

    -- Records per (template, key version), for the retire check and rewrap progress: an index
    -- here, where SQLite keeps a counts table (a counts row updated by every insert would be a
    -- hot row for every daemon, and an UPDATE costs PostgreSQL more than an index entry).
    CREATE INDEX records_version ON records (template, key_version);

    CREATE TABLE rewrap_jobs (
        id                int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        template          text NOT NULL,
        target_version    int8 NOT NULL,
        target_fp_version int8 NOT NULL,
        state             text NOT NULL
                          CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed')),
        cursor            int8 NOT NULL,
        processed         int8 NOT NULL,
        created_at        int8 NOT NULL,
        updated_at        int8 NOT NULL,
        owner             text NOT NULL DEFAULT '',
        lease_until_ms    int8 NOT NULL DEFAULT 0,
        lease_ms          int8 NOT NULL DEFAULT 0
    );

    CREATE TABLE idempotency (
        key       bytea PRIMARY KEY,
        record_id int8 NOT NULL REFERENCES records (id) ON DELETE CASCADE
    );
    CREATE INDEX idempotency_record ON idempotency (record_id);

    -- The checks of an insert, in the inserting statement's transaction: share-locks the key
    -- versions written under (a state change of one waits for the insert, and vice versa),
    -- refuses one that is not active (SQLSTATE VK001, message = key name, detail = version),
    -- and refuses ids the counter never handed out (VK002). Raising aborts the transaction, so
    -- an insert needs no separate round trip for its checks.
    CREATE FUNCTION vault_insert_guard(names text[], versions int8[], min_id int8, max_id int8)
    RETURNS int4 LANGUAGE plpgsql AS $fn$
    DECLARE
        r record;
        next_id int8;
    BEGIN
        -- Shared advisory locks, not FOR SHARE: a row lock writes the tuple (and WAL) on every
        -- insert and makes concurrent inserters share MultiXacts; these live in the lock
        -- manager only. A state change takes the same key exclusively (vault_key_lock).
        PERFORM pg_advisory_xact_lock_shared(hashtext(q.name), q.version::int4)
            FROM unnest(names, versions) AS q(name, version)
            ORDER BY q.name, q.version;
        FOR r IN
            SELECT k.name, k.version, k.state FROM key_versions k
            JOIN unnest(names, versions) AS q(name, version)
              ON k.name = q.name AND k.version = q.version
        LOOP
            IF r.state <> 'active' THEN
                RAISE EXCEPTION USING ERRCODE = 'VK001', MESSAGE = r.name,
                    DETAIL = r.version::text;
            END IF;
        END LOOP;
        SELECT value INTO next_id FROM counters WHERE name = 'record_id';
        IF min_id <= 0 OR max_id >= next_id THEN
            RAISE EXCEPTION USING ERRCODE = 'VK002', MESSAGE = 'record id was not allocated';
        END IF;
        RETURN 1;
    END
    $fn$;
    "#,
    // v2 (SQLite's v5): an idempotency key remembers the request it was first used with (a
    // keyed hash of value, metadata and TTL). Rows from before have none and fail closed.
    r#"
    ALTER TABLE idempotency ADD COLUMN request bytea;
    "#,
    // v3 (SQLite's v6): an opaque token's random check value, kept with its record, so that a
    // store restored to an earlier state (a dump, a promoted asynchronous replica) cannot make
    // an old token name the record a reused id now holds. Rows from before have none.
    r#"
    ALTER TABLE records ADD COLUMN token_check int8;
    "#,
];

/// The schema version this build writes.
pub(super) fn current() -> u32 {
    MIGRATIONS.len() as u32
}

/// Runs migrations up to `target`. Returns the version found before upgrading.
pub(super) async fn migrate(
    c: &mut deadpool_postgres::Client,
    target: u32,
) -> Result<u32, StoreError> {
    let tx = c.transaction().await.pg()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .pg()?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vault_schema (version int4 NOT NULL); \
         INSERT INTO vault_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM vault_schema)",
    )
    .await
    .map_err(map_pg)?;
    let found: i32 = tx
        .query_one("SELECT version FROM vault_schema", &[])
        .await
        .pg()?
        .get(0);
    let found = u32::try_from(found)
        .map_err(|_| StoreError::corrupt(format!("schema version {found} is out of range")))?;
    if found > current() {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: current(),
        });
    }
    if found >= target {
        tx.commit().await.pg()?;
        return Ok(found);
    }
    for sql in &MIGRATIONS[found as usize..target as usize] {
        tx.batch_execute(sql).await.pg()?;
    }
    tx.execute(
        "UPDATE vault_schema SET version = $1",
        &[&i32::try_from(target).unwrap_or(i32::MAX)],
    )
    .await
    .pg()?;
    tx.commit().await.pg()?;
    Ok(found)
}
