//! Forward-only schema migrations keyed by `PRAGMA user_version`.
//!
//! [`MIGRATIONS`] is append-only: a released entry is never edited, a change is a new entry.
//! Version `n` means the first `n` entries have run. All pending entries run in one `BEGIN
//! IMMEDIATE` transaction together with the `user_version` bump, so a crash mid-upgrade leaves
//! the previous version intact. A file whose version is above `MIGRATIONS.len()` was written
//! by newer code and is refused ([`StoreError::SchemaTooNew`]), never "repaired".

use rusqlite::Connection;

use super::conn::Failure;
use crate::store::StoreError;

/// Every migration, in order. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: metadata, keys, the id counter, records.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE key_names (
        name                TEXT PRIMARY KEY,
        purpose             TEXT NOT NULL,
        min_decrypt_version INTEGER NOT NULL CHECK (min_decrypt_version >= 0),
        created_at          INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE key_versions (
        name        TEXT NOT NULL REFERENCES key_names (name),
        version     INTEGER NOT NULL CHECK (version >= 1),
        state       TEXT NOT NULL
                    CHECK (state IN ('active', 'decrypt_only', 'retired', 'destroyed')),
        wrapped     BLOB,
        nonce_count INTEGER NOT NULL CHECK (nonce_count >= 0),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID;

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Record ids start at 1; 0 means "none" in the API.
    INSERT INTO counters (name, value) VALUES ('record_id', 1);

    CREATE TABLE records (
        id          INTEGER PRIMARY KEY,
        template    TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        ciphertext  BLOB NOT NULL,
        expires_at  INTEGER,
        metadata    TEXT,
        fp_version  INTEGER,
        fingerprint BLOB,
        lookup      BLOB,
        created_at  INTEGER NOT NULL,
        CHECK ((fp_version IS NULL) = (fingerprint IS NULL))
    );
    CREATE UNIQUE INDEX records_fingerprint ON records (template, fp_version, fingerprint)
        WHERE fingerprint IS NOT NULL;
    CREATE UNIQUE INDEX records_lookup ON records (template, lookup)
        WHERE lookup IS NOT NULL;
    CREATE INDEX records_version ON records (template, key_version);
    CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
    "#,
    // v2: rewrap jobs and idempotency keys.
    r#"
    CREATE TABLE rewrap_jobs (
        id                INTEGER PRIMARY KEY,
        template          TEXT NOT NULL,
        target_version    INTEGER NOT NULL,
        target_fp_version INTEGER NOT NULL,
        state             TEXT NOT NULL
                          CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed')),
        cursor            INTEGER NOT NULL,
        processed         INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );

    CREATE TABLE idempotency (
        key       BLOB PRIMARY KEY,
        record_id INTEGER NOT NULL REFERENCES records (id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_record ON idempotency (record_id);
    "#,
    // v3: per-(template, key version) record counts replace the records_version index. The
    // index cost up to half the insert rate (benches/vault.rs); the counts are updated once per
    // batch, in the same transaction as the rows, and still make the retire check one lookup.
    r#"
    CREATE TABLE version_counts (
        template    TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        count       INTEGER NOT NULL CHECK (count >= 0),
        PRIMARY KEY (template, key_version)
    ) WITHOUT ROWID;
    INSERT INTO version_counts (template, key_version, count)
        SELECT template, key_version, count(*) FROM records GROUP BY template, key_version;
    DROP INDEX records_version;
    "#,
    // v4: several processes on one store (store module docs): the key-table generation that
    // vaults poll, and the rewrap lease (owner, when it lapses, its length).
    r#"
    INSERT INTO counters (name, value) VALUES ('key_generation', 1);
    ALTER TABLE rewrap_jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE rewrap_jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rewrap_jobs ADD COLUMN lease_ms INTEGER NOT NULL DEFAULT 0;
    "#,
    // v5: an idempotency key remembers the request it was first used with (a keyed hash of
    // value, metadata and TTL), so a reuse with another request is refused instead of being
    // answered with the first request's token. Rows from before have none and fail closed.
    r#"
    ALTER TABLE idempotency ADD COLUMN request BLOB;
    "#,
    // v6: an opaque token's random check value, kept with its record. A store that comes back
    // older than what it acknowledged hands lost ids out again; the check value makes a token
    // name its own record or none (vault::opaque). Rows from before have none: their tokens
    // are legacy tokens, which resolve only to rows without one.
    r#"
    ALTER TABLE records ADD COLUMN token_check INTEGER;
    "#,
];

/// The schema version this build writes.
pub(crate) fn current() -> u32 {
    // MIGRATIONS is a short literal list.
    MIGRATIONS.len() as u32
}

/// The file's schema version.
pub(crate) fn version(conn: &Connection) -> Result<u32, Failure> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| {
        Failure::Store(StoreError::corrupt(format!(
            "schema version {v} is out of range"
        )))
    })
}

/// Runs migrations up to version `target` (normally [`current`]). Returns the version found
/// before upgrading.
pub(crate) fn migrate(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > current() {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: current(),
        });
    }
    if found >= target {
        return Ok(found);
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(super::conn::map_sql)?;
    // Re-read under the write lock: another process may have upgraded meanwhile.
    let locked = version(&tx)?;
    if locked > current() {
        return Err(StoreError::SchemaTooNew {
            found: locked,
            supported: current(),
        });
    }
    if locked >= target {
        return Ok(found);
    }
    let run = || -> Result<(), Failure> {
        for sql in &MIGRATIONS[locked as usize..target as usize] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", target)?;
        Ok(())
    };
    run()?;
    tx.commit().map_err(super::conn::map_sql)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::{Options, SqliteStore, conn};
    use super::*;
    use crate::keys::State;
    use crate::store::Store;

    #[test]
    fn upgrade_from_v1_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        std::fs::write(&path, b"").unwrap();
        {
            let mut c = conn::open(&path, &Options::default(), conn::Role::Writer).unwrap();
            assert_eq!(migrate(&mut c, 1).unwrap(), 0);
            assert_eq!(version(&c).unwrap(), 1);
            c.execute_batch(
                "INSERT INTO meta VALUES ('vault_id', x'0102');
                 INSERT INTO key_names VALUES ('data/pan', 'data', 1, 10);
                 INSERT INTO key_versions VALUES ('data/pan', 1, 'active', x'aa', 5, 10, 10);
                 UPDATE counters SET value = 8 WHERE name = 'record_id';
                 INSERT INTO records VALUES (7, 'pan', 1, x'beef', NULL, NULL, 1, x'f0', NULL, 3);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path, &Options::default()).unwrap();
        assert_eq!(s.meta_get("vault_id").unwrap(), Some(vec![1, 2]));
        let keys = s.keys_load().unwrap();
        assert_eq!(keys.versions[0].nonce_count, 5);
        let r = s.get_records(&[7]).unwrap()[0].clone().unwrap();
        assert_eq!(
            (r.ciphertext, r.fingerprint),
            (vec![0xbe, 0xef], Some((1, vec![0xf0])))
        );
        // v2 tables work and the counter carried over.
        assert_eq!(s.allocate_ids(1).unwrap(), 8..9);
        assert!(s.rewrap_jobs().unwrap().is_empty());
        // v3 counted the rows already there, and the retire check sees them.
        assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 1);
        assert!(
            s.key_set_state("data/pan", 1, State::Active, State::Retired, false)
                .is_err()
        );
        let found = s.writer.submit(version).unwrap();
        assert_eq!(found, current());
        s.integrity_check().unwrap();
    }

    #[test]
    fn migrations_are_idempotent_at_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        std::fs::write(&path, b"").unwrap();
        let mut c = conn::open(&path, &Options::default(), conn::Role::Writer).unwrap();
        assert_eq!(migrate(&mut c, current()).unwrap(), 0);
        assert_eq!(migrate(&mut c, current()).unwrap(), current());
        assert_eq!(migrate(&mut c, 1).unwrap(), current());
    }
}
