//! The SQLite implementation of [`Store`].
//!
//! # Threads and connections
//!
//! - **One writer.** A dedicated thread owns the only read-write connection; every write method
//!   sends it a job over a channel and blocks until the job's transaction has committed. The
//!   thread runs all jobs already waiting in its queue in one transaction (*group commit*),
//!   each in its own `SAVEPOINT` so one failing job does not fail the others, commits once
//!   (one fsync), then answers each caller ([`writer`] has the details). Writes are therefore
//!   serialized without any lock held by callers, and N concurrent writers cost far fewer than N
//!   fsyncs.
//! - **A pool of readers.** Reads use a few read-only (`query_only`) connections; WAL lets them
//!   run alongside the writer and each other. A read sees everything committed before it
//!   started, so a caller reads its own acknowledged writes.
//! - **Blocking calls.** Every method blocks on SQLite or on the writer's reply. Async callers
//!   run them on a blocking thread (`spawn_blocking`); no lock is held across an `.await`
//!   because no method is async.
//!
//! # Durability and safety
//!
//! - WAL, `synchronous=FULL` by default (a commit fsyncs the WAL, so an acknowledged write
//!   survives power loss; `NORMAL` may lose the last commits on power loss but never corrupts),
//!   foreign keys on, a busy timeout, temporary storage in memory. Set on every connection and
//!   read back; a mismatch refuses to open ([`StoreError::Pragma`]).
//! - Migrations are forward-only ([`schema`]); a newer file is refused.
//! - A file that fails to open is never deleted or recreated: [`SqliteStore::open`] needs an
//!   existing, initialized vault database and reports damage as [`StoreError::Corrupt`];
//!   [`SqliteStore::create`] refuses to touch an existing file.
//! - Record ids come from a persisted counter. The store reserves them in blocks
//!   ([`ID_BLOCK`]) so most [`Store::allocate_ids`] calls cost no transaction; a crash loses the
//!   rest of a block (a gap), never hands an id out twice.

mod conn;
mod schema;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use self::conn::{Failure, Role};
use self::writer::Writer;
pub use self::writer::WriterStats;
use super::{
    InsertOutcome, KeyNameRow, KeyTable, KeyVersionRow, NewRecord, Record, RecordUpdate,
    RewrapJobRow, Store, StoreError,
};

/// Ids reserved per counter update; see the module docs.
pub const ID_BLOCK: u64 = 1024;

/// How hard a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: faster; the last commits may be lost on power loss (an
    /// application crash loses nothing), the database is never corrupted.
    Normal,
}

/// Settings for [`SqliteStore::open`] and [`SqliteStore::create`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Commit durability.
    pub synchronous: Synchronous,
    /// Read-only connections in the pool (at least 1).
    pub read_connections: usize,
    /// How long a statement waits for a lock held by another process before failing with
    /// [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A vault's storage in one SQLite file (plus its `-wal` and `-shm` companions).
#[derive(Debug)]
pub struct SqliteStore {
    // Field order is drop order: readers close before the writer, so the writer's connection is
    // the last one and checkpoints the WAL on close.
    readers: Readers,
    ids: Mutex<Range<u64>>,
    writer: Writer,
    path: PathBuf,
}

impl SqliteStore {
    /// Creates a new vault database at `path`. Fails with [`StoreError::Conflict`] if the file
    /// exists: an existing file, even an empty or damaged one, is never overwritten.
    pub fn create(path: impl AsRef<Path>, opts: &Options) -> Result<Self, StoreError> {
        let path = path.as_ref();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Conflict(format!(
                    "{} already exists",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot create {}: {e}",
                    path.display()
                )));
            }
        }
        Self::start(path, opts, true)
    }

    /// Opens an existing vault database, upgrading its schema if it is older than this build.
    pub fn open(path: impl AsRef<Path>, opts: &Options) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "no database file at {}",
                path.display()
            )));
        }
        Self::start(path, opts, false)
    }

    fn start(path: &Path, opts: &Options, new: bool) -> Result<Self, StoreError> {
        let mut wconn = conn::open(path, opts, Role::Writer)?;
        let found = schema::version(&wconn)?;
        if found == 0 && !new {
            // An empty or foreign SQLite file: initializing it would hide a lost vault.
            return Err(StoreError::Corrupt(
                "not an initialized vault database".into(),
            ));
        }
        schema::migrate(&mut wconn, schema::current())?;
        check_counter(&wconn)?;
        let readers = Readers::open(path, opts)?;
        let writer = Writer::spawn(wconn)?;
        Ok(Self {
            readers,
            ids: Mutex::new(0..0),
            writer,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file of this store that exists now: the database, and its `-wal` and `-shm`
    /// companions while open. Temporary storage is in memory, so there are no others. For
    /// tests that scan the disk for leaked plaintext.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            files.push(PathBuf::from(p));
        }
        files.retain(|p| p.exists());
        files
    }

    /// `PRAGMA integrity_check` over the whole file; [`StoreError::Corrupt`] with SQLite's
    /// findings (page numbers and index names, no row contents) if it is not clean.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        self.readers.with(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check(20)")?;
            let lines: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if lines.len() == 1 && lines[0] == "ok" {
                Ok(())
            } else {
                Err(StoreError::Corrupt(lines.join("; ")).into())
            }
        })
    }

    /// Group-commit counters.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }
}

/// Opening invariant: the id counter is above every stored id (a restored or hand-edited file
/// could break it, and the store would then hand out ids that exist). Reading `max(id)` walks
/// the right edge of the records B-tree, which also catches a file truncated there.
fn check_counter(conn: &Connection) -> Result<(), StoreError> {
    let run = || -> Result<(), Failure> {
        let next: u64 = conn.query_row(
            "SELECT value FROM counters WHERE name = 'record_id'",
            [],
            |r| r.get(0),
        )?;
        let max: Option<u64> = conn.query_row("SELECT max(id) FROM records", [], |r| r.get(0))?;
        if max.is_some_and(|m| m >= next) {
            return Err(
                StoreError::Corrupt("record id counter is behind the records".into()).into(),
            );
        }
        Ok(())
    };
    run().map_err(StoreError::from)
}

/// The pool of read-only connections.
#[derive(Debug)]
struct Readers {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl Readers {
    fn open(path: &Path, opts: &Options) -> Result<Self, StoreError> {
        let n = opts.read_connections.max(1);
        let conns = (0..n)
            .map(|_| conn::open(path, opts, Role::Reader))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Mutex::new(conns),
            returned: Condvar::new(),
        })
    }

    /// Runs `f` on an idle connection, waiting for one if all are busy.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Failure>) -> Result<T, StoreError> {
        // The lock only guards the Vec (pop/push), never a query, so a poisoned lock still
        // holds a consistent list.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = loop {
            if let Some(c) = idle.pop() {
                break c;
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(idle);
        let lease = Lease {
            pool: self,
            conn: Some(conn),
        };
        match lease.conn.as_ref() {
            Some(c) => f(c).map_err(StoreError::from),
            None => Err(StoreError::Unavailable("read connection lost".into())),
        }
    }

    /// Runs `f` inside one read transaction, so several statements see one snapshot.
    fn snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            c.execute_batch("BEGIN")?;
            let r = f(c);
            // A read transaction has nothing to commit; ending it releases the snapshot.
            let end = c.execute_batch("COMMIT");
            let v = r?;
            end?;
            Ok(v)
        })
    }
}

/// Gives a connection back to the pool on drop, also when `f` panics.
struct Lease<'a> {
    pool: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
            self.pool.returned.notify_one();
        }
    }
}

const RECORD_COLUMNS: &str = "id, template, key_version, ciphertext, expires_at, metadata, \
                              fp_version, fingerprint, lookup, created_at";

fn record_from(r: &Row<'_>) -> rusqlite::Result<Record> {
    let fp_version: Option<u32> = r.get(6)?;
    let fingerprint: Option<Vec<u8>> = r.get(7)?;
    Ok(Record {
        id: r.get(0)?,
        template: r.get(1)?,
        key_version: r.get(2)?,
        ciphertext: r.get(3)?,
        expires_at: r.get(4)?,
        metadata: r.get(5)?,
        fingerprint: fp_version.zip(fingerprint),
        lookup: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn key_version_from(r: &Row<'_>) -> rusqlite::Result<KeyVersionRow> {
    Ok(KeyVersionRow {
        name: r.get(0)?,
        version: r.get(1)?,
        state: r.get(2)?,
        wrapped: r.get(3)?,
        nonce_count: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn job_from(r: &Row<'_>) -> rusqlite::Result<RewrapJobRow> {
    Ok(RewrapJobRow {
        id: r.get(0)?,
        template: r.get(1)?,
        target_version: r.get(2)?,
        target_fp_version: r.get(3)?,
        state: r.get(4)?,
        cursor: r.get(5)?,
        processed: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

const JOB_COLUMNS: &str = "id, template, target_version, target_fp_version, state, cursor, \
                           processed, created_at, updated_at";

fn owned_meta(entries: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn put_meta(c: &Connection, entries: &[(String, Vec<u8>)]) -> Result<(), Failure> {
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (k, v) in entries {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

/// Reserves `n` ids from the persisted counter.
fn reserve_ids(c: &Connection, n: u64) -> Result<Range<u64>, Failure> {
    let end: Option<u64> = c
        .prepare_cached(
            "UPDATE counters SET value = value + ?1 \
             WHERE name = 'record_id' AND value <= ?2 - ?1 RETURNING value",
        )?
        .query_row(params![n, i64::MAX], |r| r.get(0))
        .optional()?;
    let end = end.ok_or_else(|| StoreError::Conflict("record ids exhausted".into()))?;
    Ok(end - n..end)
}

fn not_found_or_conflict(
    c: &Connection,
    exists_sql: &str,
    p: impl rusqlite::Params,
    what: &str,
) -> Failure {
    match c.query_row(exists_sql, p, |_| Ok(())).optional() {
        Ok(Some(())) => StoreError::Conflict(format!("{what}: current state differs")).into(),
        Ok(None) => StoreError::NotFound(what.to_owned()).into(),
        Err(e) => e.into(),
    }
}

impl Store for SqliteStore {
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.writer.submit(move |c| put_meta(c, &entries))
    }

    fn keys_load(&self) -> Result<KeyTable, StoreError> {
        self.readers.snapshot(|c| {
            let names = c
                .prepare_cached(
                    "SELECT name, purpose, min_decrypt_version, created_at FROM key_names \
                     ORDER BY name",
                )?
                .query_map([], |r| {
                    Ok(KeyNameRow {
                        name: r.get(0)?,
                        purpose: r.get(1)?,
                        min_decrypt_version: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let versions = c
                .prepare_cached(
                    "SELECT name, version, state, wrapped, nonce_count, created_at, updated_at \
                     FROM key_versions ORDER BY name, version",
                )?
                .query_map([], key_version_from)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(KeyTable { names, versions })
        })
    }

    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError> {
        if first.name != name.name {
            return Err(StoreError::Conflict(
                "first version belongs to another key name".into(),
            ));
        }
        let (name, first) = (name.clone(), first.clone());
        self.writer.submit(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO key_names (name, purpose, min_decrypt_version, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    name.name,
                    name.purpose,
                    name.min_decrypt_version,
                    name.created_at
                ])?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("key {} exists", name.name)).into());
            }
            insert_version(c, &first)
        })
    }

    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError> {
        if new.state != "active" || new.version < 2 {
            return Err(StoreError::Conflict(
                "a rotation inserts an active version above 1".into(),
            ));
        }
        let new = new.clone();
        self.writer.submit(move |c| {
            let moved = c
                .prepare_cached(
                    "UPDATE key_versions SET state = 'decrypt_only', updated_at = ?3 \
                     WHERE name = ?1 AND version = ?2 AND state = 'active'",
                )?
                .execute(params![new.name, new.version - 1, new.created_at])?;
            if moved == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![new.name, new.version - 1],
                    "previous key version",
                ));
            }
            insert_version(c, &new)
        })
    }

    fn key_set_state(
        &self,
        name: &str,
        version: u32,
        from: &str,
        to: &str,
        erase_material: bool,
    ) -> Result<(), StoreError> {
        let (name, from, to) = (name.to_owned(), from.to_owned(), to.to_owned());
        self.writer.submit(move |c| {
            if to == "retired" {
                refuse_retire_with_data(c, &name, version)?;
            }
            let changed = c
                .prepare_cached(
                    "UPDATE key_versions SET state = ?4, updated_at = unixepoch(), \
                     wrapped = CASE WHEN ?5 THEN NULL ELSE wrapped END \
                     WHERE name = ?1 AND version = ?2 AND state = ?3",
                )?
                .execute(params![name, version, from, to, erase_material])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    "key version",
                ));
            }
            Ok(())
        })
    }

    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE key_names SET min_decrypt_version = ?2 \
                     WHERE name = ?1 AND min_decrypt_version <= ?2",
                )?
                .execute(params![name, min])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_names WHERE name = ?1",
                    params![name],
                    "key name (minimum version only rises)",
                ));
            }
            Ok(())
        })
    }

    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        let wraps = wraps.to_vec();
        let meta = owned_meta(meta);
        self.writer.submit(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE key_versions SET wrapped = ?3 \
                 WHERE name = ?1 AND version = ?2 AND wrapped IS NOT NULL",
            )?;
            for (name, version, wrapped) in &wraps {
                if stmt.execute(params![name, version, wrapped])? == 0 {
                    return Err(StoreError::NotFound(format!(
                        "key {name} version {version} with material"
                    ))
                    .into());
                }
            }
            // Every remaining wrap must be in the set, or it would stay under the old root key
            // and be lost with it.
            let held: u64 = c.query_row(
                "SELECT count(*) FROM key_versions WHERE wrapped IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            if held != wraps.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "{held} wrapped keys stored, {} rewrapped",
                    wraps.len()
                ))
                .into());
            }
            put_meta(c, &meta)
        })
    }

    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            let total: Option<u64> = c
                .prepare_cached(
                    "UPDATE key_versions SET nonce_count = nonce_count + ?3 \
                     WHERE name = ?1 AND version = ?2 AND nonce_count <= ?4 - ?3 \
                     RETURNING nonce_count",
                )?
                .query_row(params![name, version, n, i64::MAX], |r| r.get(0))
                .optional()?;
            match total {
                Some(t) => Ok(t),
                None => Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    "key version (nonce count would overflow)",
                )),
            }
        })
    }

    fn allocate_ids(&self, n: u64) -> Result<Range<u64>, StoreError> {
        // Held while a new block is reserved so two callers never both reserve.
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.end - ids.start >= n {
            let start = ids.start;
            ids.start += n;
            return Ok(start..start + n);
        }
        let want = n.max(ID_BLOCK);
        let block = self.writer.submit(move |c| reserve_ids(c, want))?;
        // The rest of the old block is dropped: a gap, never a repeat.
        *ids = block.start + n..block.end;
        Ok(block.start..block.start + n)
    }

    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let rows = rows.to_vec();
        self.writer.submit(move |c| insert_records(c, &rows))
    }

    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError> {
        let get = |c: &Connection| -> Result<Vec<Option<Record>>, Failure> {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE id = ?1"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(stmt.query_row([id], record_from).optional()?);
            }
            Ok(out)
        };
        if ids.len() > 1 {
            self.readers.snapshot(get)
        } else {
            self.readers.with(get)
        }
    }

    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.readers
            .with(|c| Ok(find_fingerprint(c, template, fp_version, fingerprint)?))
    }

    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError> {
        self.readers.with(|c| Ok(find_lookup(c, template, lookup)?))
    }

    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.readers.with(|c| Ok(find_idempotency(c, key)?))
    }

    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        let ids = ids.to_vec();
        self.writer.submit(move |c| {
            // Idempotency rows go with their record (ON DELETE CASCADE).
            let mut stmt = c.prepare_cached("DELETE FROM records WHERE id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                out.push(stmt.execute([id])? == 1);
            }
            Ok(out)
        })
    }

    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.writer.submit(move |c| {
            let n = c
                .prepare_cached("DELETE FROM records WHERE expires_at <= ?1")?
                .execute([now])?;
            Ok(n as u64)
        })
    }

    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError> {
        self.readers
            .with(|c| Ok(count_key_version(c, template, key_version)?))
    }

    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError> {
        self.readers
            .with(|c| Ok(count_fp_version(c, template, fp_version)?))
    }

    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.readers.with(|c| {
            // Walks the table in id order from the cursor (NOT INDEXED keeps the planner off
            // records_version, which would need a sort of every old row per batch): each row is
            // visited once over the whole job.
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records NOT INDEXED \
                     WHERE id > ?1 AND template = ?2 \
                       AND (key_version < ?3 OR (fingerprint IS NOT NULL AND fp_version < ?4)) \
                     ORDER BY id LIMIT ?5"
                ))?
                .query_map(
                    params![after_id, template, target_version, target_fp_version, limit],
                    record_from,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError> {
        let (updates, job) = (updates.to_vec(), job.clone());
        self.writer.submit(move |c| {
            let mut with_fp = c.prepare_cached(
                "UPDATE records SET key_version = ?3, ciphertext = ?4, fp_version = ?5, \
                 fingerprint = ?6 \
                 WHERE id = ?1 AND key_version = ?2 \
                   AND NOT (key_version = ?3 AND fp_version IS ?5)",
            )?;
            let mut data_only = c.prepare_cached(
                "UPDATE records SET key_version = ?3, ciphertext = ?4 \
                 WHERE id = ?1 AND key_version = ?2 AND key_version <> ?3",
            )?;
            let mut updated = 0u64;
            for u in &updates {
                let n = match &u.fingerprint {
                    Some((v, fp)) => with_fp.execute(params![
                        u.id,
                        u.old_key_version,
                        u.new_key_version,
                        u.ciphertext,
                        v,
                        fp
                    ])?,
                    None => data_only.execute(params![
                        u.id,
                        u.old_key_version,
                        u.new_key_version,
                        u.ciphertext
                    ])?,
                };
                updated += n as u64;
            }
            let saved = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET state = ?2, cursor = ?3, \
                     processed = processed + ?4, updated_at = ?5 \
                     WHERE id = ?1 AND cursor <= ?3",
                )?
                .execute(params![
                    job.id,
                    job.state,
                    job.cursor,
                    updated,
                    job.updated_at
                ])?;
            if saved == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job (cursor only moves forward)",
                ));
            }
            Ok(updated)
        })
    }

    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = ?1"
            ))?
            .query_row([id], job_from)
            .optional()?)
        })
    }

    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM rewrap_jobs ORDER BY id DESC"
            ))?
            .query_map([], job_from)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError> {
        let job = job.clone();
        self.writer.submit(move |c| {
            Ok(c.prepare_cached(
                "INSERT INTO rewrap_jobs (template, target_version, target_fp_version, state, \
                 cursor, processed, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            )?
            .query_row(
                params![
                    job.template,
                    job.target_version,
                    job.target_fp_version,
                    job.state,
                    job.cursor,
                    job.processed,
                    job.created_at,
                    job.updated_at
                ],
                |r| r.get(0),
            )?)
        })
    }

    fn rewrap_job_update(&self, job: &RewrapJobRow, from_state: &str) -> Result<(), StoreError> {
        let (job, from) = (job.clone(), from_state.to_owned());
        self.writer.submit(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET state = ?3, cursor = ?4, processed = ?5, \
                     updated_at = ?6 WHERE id = ?1 AND state = ?2",
                )?
                .execute(params![
                    job.id,
                    from,
                    job.state,
                    job.cursor,
                    job.processed,
                    job.updated_at
                ])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job",
                ));
            }
            Ok(())
        })
    }
}

fn insert_version(c: &Connection, v: &KeyVersionRow) -> Result<(), Failure> {
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
fn refuse_retire_with_data(c: &Connection, name: &str, version: u32) -> Result<(), Failure> {
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
        return Err(StoreError::Conflict(format!(
            "{left} records are still stored under this version"
        ))
        .into());
    }
    Ok(())
}

fn count_key_version(c: &Connection, template: &str, v: u32) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT count(*) FROM records WHERE template = ?1 AND key_version = ?2")?
        .query_row(params![template, v], |r| r.get(0))
}

fn count_fp_version(c: &Connection, template: &str, v: u32) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "SELECT count(*) FROM records \
         WHERE template = ?1 AND fp_version = ?2 AND fingerprint IS NOT NULL",
    )?
    .query_row(params![template, v], |r| r.get(0))
}

fn find_fingerprint(
    c: &Connection,
    template: &str,
    v: u32,
    fp: &[u8],
) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached(
        "SELECT id FROM records \
         WHERE template = ?1 AND fp_version = ?2 AND fingerprint = ?3",
    )?
    .query_row(params![template, v, fp], |r| r.get(0))
    .optional()
}

fn find_lookup(c: &Connection, template: &str, lookup: &[u8]) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached("SELECT id FROM records WHERE template = ?1 AND lookup = ?2")?
        .query_row(params![template, lookup], |r| r.get(0))
        .optional()
}

fn find_idempotency(c: &Connection, key: &[u8]) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached("SELECT record_id FROM idempotency WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// The body of [`Store::insert_records`], inside the writer's transaction.
fn insert_records(c: &Connection, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, Failure> {
    let next: u64 = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'record_id'")?
        .query_row([], |r| r.get(0))?;
    let mut insert = c.prepare_cached(
        "INSERT INTO records (id, template, key_version, ciphertext, expires_at, metadata, \
         fp_version, fingerprint, lookup, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if row.id == 0 || row.id >= next {
            // An id the counter never handed out could be handed out again later.
            return Err(StoreError::Conflict("record id was not allocated".into()).into());
        }
        if let Some(k) = &row.idempotency
            && let Some(id) = find_idempotency(c, k)?
        {
            out.push(InsertOutcome::ExistingIdempotency(id));
            continue;
        }
        if let Some((v, fp)) = &row.fingerprint
            && let Some(id) = find_fingerprint(c, &row.template, *v, fp)?
        {
            out.push(InsertOutcome::ExistingFingerprint(id));
            continue;
        }
        if let Some(l) = &row.lookup
            && find_lookup(c, &row.template, l)?.is_some()
        {
            out.push(InsertOutcome::LookupCollision);
            continue;
        }
        let (fp_version, fingerprint) = match &row.fingerprint {
            Some((v, fp)) => (Some(*v), Some(fp.as_slice())),
            None => (None, None),
        };
        insert.execute(params![
            row.id,
            row.template,
            row.key_version,
            row.ciphertext,
            row.expires_at,
            row.metadata,
            fp_version,
            fingerprint,
            row.lookup,
            row.created_at
        ])?;
        if let Some(k) = &row.idempotency {
            c.prepare_cached("INSERT INTO idempotency (key, record_id) VALUES (?1, ?2)")?
                .execute(params![k, row.id])?;
        }
        out.push(InsertOutcome::Inserted);
    }
    Ok(out)
}
