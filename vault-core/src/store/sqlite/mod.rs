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

pub mod backup;
mod conn;
mod insert;
mod keytx;
mod readers;
mod rows;
mod schema;
mod store;
mod unfinished;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ids::IdBlocks;

use self::conn::{Failure, Role};
use self::insert::{Counts, find_fingerprint, find_idempotency, find_lookup, insert_records};
use self::keytx::{
    bump_key_generation, count_fp_version, count_key_version, insert_version,
    not_found_or_conflict, now_ms, owned_meta, put_meta, refuse_retire_with_data, require_active,
    reserve_ids,
};
use self::readers::Readers;
use self::rows::{JOB_COLUMNS, RECORD_COLUMNS, job_from, key_version_from, record_from};
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
                return Err(StoreError::conflict(format!(
                    "{} already exists",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(
                    StoreError::unavailable(format!("cannot create {}", path.display())).because(e),
                );
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
            return Err(StoreError::conflict(format!(
                "{} holds vault data; not removing it",
                path.display()
            )));
        }
        for f in unfinished::files(path) {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(
                        StoreError::unavailable(format!("cannot remove {}", f.display()))
                            .because(e),
                    );
                }
            }
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                StoreError::unavailable(format!("cannot sync {}", dir.display())).because(e)
            })
    }

    /// Opens an existing vault database, upgrading its schema if it is older than this build.
    pub fn open(path: impl AsRef<Path>, opts: &Options) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::not_found(format!(
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
            return Err(StoreError::corrupt(
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
                Err(StoreError::corrupt(lines.join("; ")).into())
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
/// the right edge of the records B-tree, which also catches a file truncated there. Both are
/// read in one statement, so from one snapshot: read apart, another handle's commit between the
/// two reads (new ids and their records) looked like a counter behind the records.
fn check_counter(conn: &Connection) -> Result<(), StoreError> {
    let run = || -> Result<(), Failure> {
        let (next, max): (u64, Option<u64>) = conn.query_row(
            "SELECT (SELECT value FROM counters WHERE name = 'record_id'), \
                    (SELECT max(id) FROM records)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if max.is_some_and(|m| m >= next) {
            return Err(
                StoreError::corrupt("record id counter is behind the records".into()).into(),
            );
        }
        Ok(())
    };
    run().map_err(StoreError::from)
}

#[cfg(test)]
mod tests;
