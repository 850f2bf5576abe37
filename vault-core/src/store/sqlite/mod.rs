//! The SQLite implementation of [`Store`].
//!
//! # Threads and connections
//!
//! - **One writer.** A dedicated thread owns the only read-write connection; every write method
//!   sends it a job over a channel and blocks until the job's transaction has committed. The
//!   thread runs all jobs already waiting in its queue in one transaction (*group commit*),
//!   each in its own `SAVEPOINT` so one failing job does not fail the others, commits once
//!   (one fsync), then answers each caller. A reply of `Ok` means committed. Writes are therefore
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
//! - Migrations are an append-only list keyed by `PRAGMA user_version`, all pending ones run
//!   in one `BEGIN IMMEDIATE` transaction; a file written by newer code is refused
//!   ([`StoreError::SchemaTooNew`]).
//! - A file that fails to open is never deleted or recreated: [`SqliteStore::open`] needs an
//!   existing, initialized vault database and reports damage as [`StoreError::Corrupt`];
//!   [`SqliteStore::create`] refuses to touch an existing file.
//! - Record ids come from a persisted counter. The store reserves them in blocks
//!   ([`super::ID_BLOCK`], through [`super::IdBlocks`]) so most [`Store::allocate_ids`] calls
//!   cost no transaction; a crash loses the rest of a block (a gap), never hands an id out
//!   twice.
//!
//! # Tables
//!
//! The insert benchmark (`benches/store.rs`) drives the design:
//! - `records` is keyed by `id INTEGER PRIMARY KEY` (the rowid). Ids come from a persisted
//!   counter and grow, so inserts append at the right edge of the table B-tree.
//! - Secondary indexes exist only where a lookup needs them, and the unique ones are partial
//!   (`WHERE … IS NOT NULL`), so a random-token row without fingerprint or lookup touches none of
//!   them. Record counts per (template, key version) live in `version_counts`, updated once
//!   per batch in the same transaction as the rows (schema v3): a `(template, key_version)`
//!   index on every row cost up to half the insert rate (`benches/vault.rs`), while the counts
//!   keep the retire check ([`Store::count_by_key_version`]) a single lookup inside the
//!   writer's transaction. [`Store::records_to_rewrap`] walks the rowid from the job's cursor,
//!   so a whole job reads each row once.
//! - `idempotency` is a separate `WITHOUT ROWID` table (most rows carry no key) with an index on
//!   `record_id` so the cascading delete of a record finds its key without a scan.

mod conn;
mod schema;
mod unfinished;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ids::IdBlocks;

use self::conn::{Failure, Role};
use self::writer::Writer;
pub use self::writer::WriterStats;
use super::{
    IdempotencyHit, InsertOutcome, KeyNameRow, KeyTable, KeyVersionRow, NewRecord, Record,
    RecordUpdate, RewrapJobRow, Store, StoreError,
};

/// Pages of room [`Store::probe_write`] asks for (1 MiB at the default 4 KiB page size:
/// several batches of records).
const PROBE_HEADROOM_PAGES: u64 = 256;

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
    /// Test-only: a disk that fills up on demand (SQLite's `max_page_count`, applied by the
    /// writer before each group). Not a feature; see [`PageLimit`].
    #[doc(hidden)]
    pub page_limit: Option<PageLimit>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            page_limit: None,
        }
    }
}

/// Test-only switch simulating a full disk: while set to `n > 0`, the database may not grow
/// past `n` pages (`PRAGMA max_page_count`; SQLite keeps at least the current size), so writes
/// that need a new page fail with `SQLITE_FULL` exactly as on a full filesystem. `0` lifts the
/// limit. Shared by clones, so a test can fill and free the "disk" of a running store.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct PageLimit(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl PageLimit {
    /// A switch with no limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit the database to `pages` pages (`0`: no limit).
    pub fn set(&self, pages: u64) {
        self.0.store(pages, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A vault's storage in one SQLite file (plus its `-wal` and `-shm` companions).
#[derive(Debug)]
pub struct SqliteStore {
    // Field order is drop order: readers close before the writer, so the writer's connection is
    // the last one and checkpoints the WAL on close.
    readers: Readers,
    ids: IdBlocks,
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

    /// Whether the file at `path` is the leftover of a creation interrupted before the vault
    /// existed (a crash or power cut during the first start): zero bytes, a header without a
    /// schema, or the schema without one row of vault data. Such a file holds nothing anyone
    /// was answered for; a creator may [`SqliteStore::remove_unfinished`] it and start over.
    /// A foreign or non-SQLite file, or one holding any vault row, is never unfinished.
    pub fn is_unfinished(path: impl AsRef<Path>) -> Result<bool, StoreError> {
        unfinished::holds_nothing(path.as_ref())
    }

    /// Removes an unfinished database and its journal, WAL and shared-memory files, checking
    /// again first (it refuses, with [`StoreError::Conflict`], a file that holds data), then
    /// syncs the directory so the removal is durable before a new file takes the name.
    pub fn remove_unfinished(path: impl AsRef<Path>) -> Result<(), StoreError> {
        let path = path.as_ref();
        if !unfinished::holds_nothing(path)? {
            return Err(StoreError::Conflict(format!(
                "{} holds vault data; not removing it",
                path.display()
            )));
        }
        for f in unfinished::files(path) {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot remove {}: {e}",
                        f.display()
                    )));
                }
            }
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", dir.display())))
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
        if !new {
            conn::check_header(path)?;
        }
        let mut wconn = conn::connect(path, Role::Writer)?;
        // Read before any pragma writes to the file.
        let found = schema::version(&wconn)?;
        if found == 0 && !new {
            // An empty or foreign SQLite file: initializing it would hide a lost vault.
            return Err(StoreError::Corrupt(
                "not an initialized vault database".into(),
            ));
        }
        conn::apply_pragmas(&wconn, opts, Role::Writer)?;
        schema::migrate(&mut wconn, schema::current())?;
        check_counter(&wconn)?;
        let readers = Readers::open(path, opts)?;
        let writer = Writer::spawn_with_limit(wconn, opts.page_limit.clone())?;
        Ok(Self {
            readers,
            ids: IdBlocks::new(),
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
                              fp_version, fingerprint, lookup, created_at, token_check";

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
        // Stored as the signed 64-bit integer of the same bits.
        token_check: r.get::<_, Option<i64>>(10)?.map(|c| c as u64),
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
        owner: r.get(9)?,
    })
}

const JOB_COLUMNS: &str = "id, template, target_version, target_fp_version, state, cursor, \
                           processed, created_at, updated_at, owner";

/// Milliseconds since the Unix epoch: the store's clock for rewrap leases (one host).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Marks the key table changed, in the caller's transaction ([`Store::keys_generation`]).
fn bump_key_generation(c: &Connection) -> Result<(), Failure> {
    c.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = 'key_generation'")?
        .execute([])?;
    Ok(())
}

/// Refuses a record under a key version the table holds in another state than `active`.
fn require_active(c: &Connection, name: &str, version: u32) -> Result<(), Failure> {
    let state: Option<String> = c
        .prepare_cached("SELECT state FROM key_versions WHERE name = ?1 AND version = ?2")?
        .query_row(params![name, version], |r| r.get(0))
        .optional()?;
    match state.as_deref() {
        Some("active") | None => Ok(()),
        Some(_) => Err(StoreError::KeyNotActive {
            name: name.to_owned(),
            version,
        }
        .into()),
    }
}

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

    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.writer.submit(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            for (k, v) in &entries {
                if stmt.execute(params![k, v])? == 0 {
                    return Err(StoreError::Conflict(format!("metadata {k} exists")).into());
                }
            }
            Ok(())
        })
    }

    /// A committed metadata write, plus room to grow: free pages inside the file and pages
    /// below `max_page_count` together at least [`PROBE_HEADROOM_PAGES`]. A small write can
    /// land in a page with space left while a batch of records cannot, so success of the
    /// write alone would flip health back while tokenize still fails.
    fn probe_write(&self) -> Result<(), StoreError> {
        self.writer.submit(|c| {
            put_meta(c, &[(super::PROBE_KEY.to_owned(), Vec::new())])?;
            let pragma = |name: &str| -> Result<u64, Failure> {
                Ok(c.pragma_query_value(None, name, |r| r.get(0))?)
            };
            let (max, used, free) = (
                pragma("max_page_count")?,
                pragma("page_count")?,
                pragma("freelist_count")?,
            );
            if max.saturating_sub(used) + free < PROBE_HEADROOM_PAGES {
                return Err(StoreError::Unavailable("the database cannot grow".into()).into());
            }
            Ok(())
        })
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

    fn keys_generation(&self) -> Result<u64, StoreError> {
        self.readers.with(|c| {
            Ok(
                c.prepare_cached("SELECT value FROM counters WHERE name = 'key_generation'")?
                    .query_row([], |r| r.get(0))?,
            )
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
            bump_key_generation(c)?;
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
            bump_key_generation(c)?;
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
            bump_key_generation(c)
        })
    }

    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE key_names SET min_decrypt_version = ?2 \
                     WHERE name = ?1 AND min_decrypt_version < ?2",
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
            bump_key_generation(c)
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
            bump_key_generation(c)?;
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
        self.ids
            .take(n, |want| self.writer.submit(move |c| reserve_ids(c, want)))
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

    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError> {
        self.readers.with(|c| Ok(find_idempotency(c, key)?))
    }

    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        let ids = ids.to_vec();
        self.writer.submit(move |c| {
            // Idempotency rows go with their record (ON DELETE CASCADE).
            let mut stmt = c.prepare_cached(
                "DELETE FROM records WHERE id = ?1 RETURNING template, key_version",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            let mut counts = Counts::default();
            for id in &ids {
                let gone: Option<(String, u32)> = stmt
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((t, v)) = &gone {
                    counts.add(t, *v, -1);
                }
                out.push(gone.is_some());
            }
            counts.apply(c)?;
            Ok(out)
        })
    }

    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.writer.submit(move |c| {
            let mut counts = Counts::default();
            let mut n = 0u64;
            let mut stmt = c.prepare_cached(
                "DELETE FROM records WHERE expires_at <= ?1 RETURNING template, key_version",
            )?;
            let mut rows = stmt.query([now])?;
            while let Some(r) = rows.next()? {
                let (t, v): (String, u32) = (r.get(0)?, r.get(1)?);
                counts.add(&t, v, -1);
                n += 1;
            }
            drop(rows);
            counts.apply(c)?;
            Ok(n)
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
            let mut counts = Counts::default();
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
                if n == 1 && u.old_key_version != u.new_key_version {
                    counts.add(&job.template, u.old_key_version, -1);
                    counts.add(&job.template, u.new_key_version, 1);
                }
            }
            counts.apply(c)?;
            let saved = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET state = ?2, cursor = ?3, \
                     processed = processed + ?4, updated_at = ?5, \
                     lease_until_ms = CASE WHEN owner = '' THEN 0 ELSE ?7 + lease_ms END \
                     WHERE id = ?1 AND cursor <= ?3 AND owner IN ('', ?6)",
                )?
                .execute(params![
                    job.id,
                    job.state,
                    job.cursor,
                    updated,
                    job.updated_at,
                    job.owner,
                    now_ms()
                ])?;
            if saved == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job (cursor only moves forward; lease held by another owner)",
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
                     updated_at = ?6, \
                     owner = CASE WHEN ?3 = 'running' THEN owner ELSE '' END, \
                     lease_until_ms = CASE WHEN ?3 = 'running' THEN lease_until_ms ELSE 0 END \
                     WHERE id = ?1 AND state = ?2 AND owner IN ('', ?7)",
                )?
                .execute(params![
                    job.id,
                    from,
                    job.state,
                    job.cursor,
                    job.processed,
                    job.updated_at,
                    job.owner
                ])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job (state changed, or lease held by another owner)",
                ));
            }
            Ok(())
        })
    }

    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
        self.writer.submit(move |c| {
            let now = now_ms();
            let granted = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET owner = ?2, lease_ms = ?3, lease_until_ms = ?4 + ?3 \
                     WHERE id = ?1 AND state <> 'completed' \
                       AND (owner IN ('', ?2) OR lease_until_ms < ?4)",
                )?
                .execute(params![id, owner, lease, now])?;
            if granted == 0 {
                c.prepare_cached("SELECT 1 FROM rewrap_jobs WHERE id = ?1")?
                    .query_row([id], |_| Ok(()))
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound("rewrap job".into()))?;
            }
            Ok(granted == 1)
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
    Ok(c.prepare_cached(
        "SELECT count FROM version_counts WHERE template = ?1 AND key_version = ?2",
    )?
    .query_row(params![template, v], |r| r.get(0))
    .optional()?
    .unwrap_or(0))
}

/// Changes to `version_counts` gathered over one write, applied once per (template, version).
#[derive(Default)]
struct Counts(Vec<(String, u32, i64)>);

impl Counts {
    fn add(&mut self, template: &str, version: u32, delta: i64) {
        match self
            .0
            .iter_mut()
            .find(|(t, v, _)| *v == version && t == template)
        {
            Some(entry) => entry.2 += delta,
            None => self.0.push((template.to_owned(), version, delta)),
        }
    }

    fn apply(&self, c: &Connection) -> rusqlite::Result<()> {
        let mut stmt = c.prepare_cached(
            "INSERT INTO version_counts (template, key_version, count) VALUES (?1, ?2, ?3) \
             ON CONFLICT (template, key_version) DO UPDATE SET count = count + excluded.count",
        )?;
        // A row with a negative count would fail the CHECK before the upsert adds it, so
        // decrements are plain updates (their row exists: the records being removed were
        // counted when inserted).
        let mut down = c.prepare_cached(
            "UPDATE version_counts SET count = count + ?3 WHERE template = ?1 AND key_version = ?2",
        )?;
        for (t, v, delta) in &self.0 {
            match delta.cmp(&0) {
                std::cmp::Ordering::Greater => stmt.execute(params![t, v, delta])?,
                std::cmp::Ordering::Less => down.execute(params![t, v, delta])?,
                std::cmp::Ordering::Equal => 0,
            };
        }
        Ok(())
    }
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

fn find_idempotency(c: &Connection, key: &[u8]) -> rusqlite::Result<Option<IdempotencyHit>> {
    c.prepare_cached("SELECT record_id, request FROM idempotency WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(IdempotencyHit {
                record_id: r.get(0)?,
                request: request_hash(r.get::<_, Option<Vec<u8>>>(1)?),
            })
        })
        .optional()
}

/// A stored request hash; a missing or malformed one (rows from before schema v5) becomes all
/// zeros, which no request hashes to, so such a key answers `ALREADY_EXISTS`, never a token.
fn request_hash(stored: Option<Vec<u8>>) -> [u8; 32] {
    stored
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
        .unwrap_or([0; 32])
}

/// The body of [`Store::insert_records`], inside the writer's transaction.
fn insert_records(c: &Connection, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, Failure> {
    let next: u64 = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'record_id'")?
        .query_row([], |r| r.get(0))?;
    let mut insert = c.prepare_cached(
        "INSERT INTO records (id, template, key_version, ciphertext, expires_at, metadata, \
         fp_version, fingerprint, lookup, created_at, token_check) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut checked: Vec<(String, u32)> = Vec::new();
    for row in rows {
        let mut keys = vec![(format!("data/{}", row.template), row.key_version)];
        if let Some((v, _)) = &row.fingerprint {
            keys.push((format!("fp/{}", row.template), *v));
        }
        for key in keys {
            if !checked.contains(&key) {
                require_active(c, &key.0, key.1)?;
                checked.push(key);
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut counts = Counts::default();
    for row in rows {
        if row.id == 0 || row.id >= next {
            // An id the counter never handed out could be handed out again later.
            return Err(StoreError::Conflict("record id was not allocated".into()).into());
        }
        if let Some(k) = &row.idempotency
            && let Some(hit) = find_idempotency(c, &k.key)?
        {
            out.push(InsertOutcome::ExistingIdempotency(hit));
            continue;
        }
        if let Some((v, fp)) = &row.fingerprint
            && let Some(id) = find_fingerprint(c, &row.template, *v, fp)?
        {
            if let Some(k) = &row.idempotency {
                c.prepare_cached(
                    "INSERT INTO idempotency (key, record_id, request) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![k.key, id, k.request])?;
            }
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
            row.created_at,
            row.token_check.map(|c| c as i64)
        ])?;
        if let Some(k) = &row.idempotency {
            c.prepare_cached(
                "INSERT INTO idempotency (key, record_id, request) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![k.key, row.id, k.request])?;
        }
        counts.add(&row.template, row.key_version, 1);
        out.push(InsertOutcome::Inserted);
    }
    counts.apply(c)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
