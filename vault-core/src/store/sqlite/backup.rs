//! Backing up a live SQLite vault, and restoring one into a new place.
//!
//! [`backup`] uses SQLite's online backup API from a read-only connection of its own, so the
//! daemon keeps serving meanwhile (WAL: readers never block the writer). All pages are copied in
//! one step, that is inside one read transaction: the copy is one consistent snapshot of every
//! table together (records, the key table with its nonce counters, the record-id counter, rewrap
//! jobs, idempotency keys), never a key table from one moment and records from another. The
//! copy is written to a temporary file beside the target, switched to a rollback journal (one
//! self-contained file), checked with `PRAGMA integrity_check`, fsynced, and renamed into place
//! (then the directory is fsynced): a crash leaves either no backup or a whole one.
//!
//! A backup holds what the vault file holds: ciphertext, wrapped keys, keyed hashes. Without the
//! root key (passphrase, shares, key file or HSM) it opens nothing.
//!
//! Restoring an old copy rolls the vault back in time; what that means for tokens issued after
//! the backup and for GCM nonces is in `tests/rollback.rs` and SECURITY.md ("A store that goes
//! back in time"): every reservation of nonces takes a fresh random 64-bit field, so a restored
//! vault that hands out counter values again still never repeats a nonce.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The vault's id (hex).
    pub vault_id: String,
    /// Stored records.
    pub records: u64,
    /// Key versions in the key table.
    pub key_versions: u64,
    /// Bytes written.
    pub bytes: u64,
}

fn unavailable(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::unavailable(what).because(e)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::unavailable(what).because(e)
}

/// A temporary name beside `target` (same directory, so the rename is atomic).
fn temporary(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vault".into());
    target.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsyncing {}", dir.display())))
}

/// Checks a database file is a whole vault: integrity, then what it holds.
fn inspect(conn: &Connection) -> Result<Copied, StoreError> {
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(unavailable("checking the copy".into()))?;
    if check != "ok" {
        return Err(StoreError::corrupt(format!(
            "the copy fails SQLite's integrity check: {check}"
        )));
    }
    let id: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'vault_id'", [], |r| {
            r.get(0)
        })
        .map_err(|_| StoreError::corrupt("not a vault database (no vault id)".into()))?;
    let id = id.ok_or_else(|| StoreError::corrupt("not a vault database".into()))?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(unavailable("counting the copy".into()))
    };
    Ok(Copied {
        vault_id: id.iter().map(|b| format!("{b:02x}")).collect(),
        records: count("SELECT count(*) FROM records")?,
        key_versions: count("SELECT count(*) FROM key_versions")?,
        bytes: 0,
    })
}

/// Writes the finished temporary file `tmp` to `target`: fsync, rename, fsync the directory.
fn publish(tmp: &Path, target: &Path, mut copied: Copied) -> Result<Copied, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp)
        .map_err(io(format!("opening {}", tmp.display())))?;
    file.sync_all()
        .map_err(io(format!("fsyncing {}", tmp.display())))?;
    copied.bytes = file
        .metadata()
        .map_err(io(format!("reading {}", tmp.display())))?
        .len();
    drop(file);
    // Not over an existing file: checked before starting, and checked again here because the
    // copy took time. (`rename` would replace it silently.)
    if target.exists() {
        return Err(StoreError::conflict(format!(
            "{} appeared while copying; nothing was replaced",
            target.display()
        )));
    }
    std::fs::rename(tmp, target).map_err(io(format!("renaming to {}", target.display())))?;
    sync_dir(target)?;
    Ok(copied)
}

/// Removes the temporary file on every early return (`None` once it was renamed into place).
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        let Some(path) = self.0.take() else { return };
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Copies the vault database `db` (live or not) to the new file `out` (mode 0600).
pub fn backup(db: &Path, out: &Path) -> Result<Copied, StoreError> {
    if !db.is_file() {
        return Err(StoreError::not_found(format!(
            "no vault database at {}",
            db.display()
        )));
    }
    if out.exists() {
        return Err(StoreError::conflict(format!(
            "{} exists: give a new file",
            out.display()
        )));
    }
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable(format!("opening {}", db.display())))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(unavailable("setting the busy timeout".into()))?;
    let tmp = temporary(out);
    let mut partial = Partial(Some(tmp.clone()));
    create_private(&tmp)?;
    let mut dst =
        Connection::open(&tmp).map_err(unavailable(format!("creating {}", tmp.display())))?;
    {
        let copy = rusqlite::backup::Backup::new(&src, &mut dst)
            .map_err(unavailable("starting the backup".into()))?;
        // -1: every page in one step, inside one read transaction of the source, so the copy is
        // one snapshot. Busy or locked (a checkpoint holding a lock): wait and step again.
        let mut tries = 0;
        loop {
            match copy.step(-1).map_err(unavailable("copying pages".into()))? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                _ => {
                    tries += 1;
                    if tries > 200 {
                        return Err(StoreError::unavailable(
                            "the database stayed locked for 10 s".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    drop(src);
    // One self-contained file: a rollback journal instead of WAL, and synchronous writes.
    let mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(unavailable("setting the copy's journal mode".into()))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::unavailable(format!(
            "the copy kept journal mode {mode}"
        )));
    }
    let copied = inspect(&dst)?;
    dst.close()
        .map_err(|(_, e)| StoreError::unavailable("closing the copy".into()).because(e))?;
    let copied = publish(&tmp, out, copied)?;
    partial.0 = None;
    Ok(copied)
}

/// Restores the backup `from` as the vault database `db`, which must not exist: a live vault is
/// never overwritten. The backup is checked first (integrity, a vault id).
pub fn restore(from: &Path, db: &Path) -> Result<Copied, StoreError> {
    let mut live = vec![db.to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = db.to_owned().into_os_string();
        p.push(suffix);
        live.push(PathBuf::from(p));
    }
    if let Some(found) = live.iter().find(|p| p.exists()) {
        return Err(StoreError::conflict(format!(
            "{} exists: restore into a new data directory (a live vault is never overwritten)",
            found.display()
        )));
    }
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable(format!("opening {}", from.display())))?;
    let copied = inspect(&src)?;
    drop(src);
    let tmp = temporary(db);
    let mut partial = Partial(Some(tmp.clone()));
    create_private(&tmp)?;
    let mut reader =
        std::fs::File::open(from).map_err(io(format!("opening {}", from.display())))?;
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    std::io::copy(&mut reader, &mut writer).map_err(io(format!("writing {}", tmp.display())))?;
    drop(writer);
    let copied = publish(&tmp, db, copied)?;
    partial.0 = None;
    Ok(copied)
}

/// Creates an empty file readable by its owner only.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .map(drop)
        .map_err(io(format!("creating {}", path.display())))
}
