//! Opening connections: pragmas set and read back on every open, and the mapping from SQLite
//! result codes to [`StoreError`].

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ffi::ErrorCode};

use super::{Options, Synchronous};
use crate::store::StoreError;

/// An error inside the SQLite backend: either SQLite's own or a refusal decided by our code.
/// Converted to [`StoreError`] at the boundary, so `?` works on both inside a job.
#[derive(Debug)]
pub(crate) enum Failure {
    /// SQLite reported an error.
    Sql(rusqlite::Error),
    /// Our code refused (conflict, not found, …).
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Sql(e) => map_sql(e),
            Failure::Store(e) => e,
        }
    }
}

/// Maps a SQLite error to a [`StoreError`], kept as its source. SQLite's messages name tables,
/// columns and constraints, never bound values, so they are safe to carry.
pub(crate) fn map_sql(e: rusqlite::Error) -> StoreError {
    let msg = e.to_string();
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::corrupt(msg),
        Some(ErrorCode::ConstraintViolation) => StoreError::conflict(msg),
        // SQLITE_FULL, READONLY, IOERR, BUSY, LOCKED, CANTOPEN, PERM, NOMEM, …: the file may be
        // fine; the operator has to fix the environment.
        Some(_) => StoreError::unavailable(msg),
        // Not a SQLite result code: a type conversion or API misuse on our side.
        None => StoreError::unavailable(msg),
    };
    kind.caused_by(e)
}

/// The role a connection plays; readers are opened read-only and `query_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Writer,
    Reader,
}

/// Opens a connection and applies and asserts the pragmas. The file must exist (the store
/// creates it with `create_new` first), so SQLite never silently creates an empty database in
/// place of a missing one.
pub(crate) fn open(path: &Path, opts: &Options, role: Role) -> Result<Connection, StoreError> {
    let conn = connect(path, role)?;
    apply_pragmas(&conn, opts, role).map_err(StoreError::from)?;
    Ok(conn)
}

/// Opens a connection without setting anything (so it writes nothing); [`apply_pragmas`]
/// must follow before the connection is used for anything but a version read.
pub(crate) fn connect(path: &Path, role: Role) -> Result<Connection, StoreError> {
    let flags = match role {
        Role::Writer => OpenFlags::SQLITE_OPEN_READ_WRITE,
        Role::Reader => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags(path, flags).map_err(map_sql)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks, by reading only, that an existing file is a non-empty SQLite database: SQLite
/// treats an empty file as a new database and would write a header into it.
pub(crate) fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| {
        StoreError::unavailable(format!("cannot read {}", path.display())).because(e)
    })?;
    match f.read_exact(&mut head) {
        Ok(()) if &head == MAGIC => Ok(()),
        Ok(()) => Err(StoreError::corrupt("not a SQLite database".into())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StoreError::corrupt(
            "file too short for a database header".into(),
        )),
        Err(e) => {
            Err(StoreError::unavailable(format!("cannot read {}", path.display())).because(e))
        }
    }
}

/// Sets every pragma, then reads each one back: a filesystem without shared memory, for
/// instance, silently keeps the rollback journal, and we refuse to run on weaker guarantees
/// than configured.
pub(crate) fn apply_pragmas(conn: &Connection, opts: &Options, role: Role) -> Result<(), Failure> {
    conn.busy_timeout(opts.busy_timeout)?;
    if role == Role::Writer {
        // Returns the resulting mode; asserted below with the others.
        let _: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    }
    let sync = match opts.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Sorts and temporary indexes stay in memory: no stray temp files beside the vault.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", true)?;
    }

    let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    expect("journal_mode", "wal", &journal.to_ascii_lowercase())?;
    let sync_found: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    let sync_expected = match opts.synchronous {
        Synchronous::Full => 2,
        Synchronous::Normal => 1,
    };
    expect("synchronous", sync_expected, sync_found)?;
    let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    expect("foreign_keys", 1, fk)?;
    let temp: i64 = conn.pragma_query_value(None, "temp_store", |r| r.get(0))?;
    expect("temp_store", 2, temp)?;
    let busy: i64 = conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
    expect("busy_timeout", millis(opts.busy_timeout), busy)?;
    if role == Role::Reader {
        let q: i64 = conn.pragma_query_value(None, "query_only", |r| r.get(0))?;
        expect("query_only", 1, q)?;
    }
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn expect<T: PartialEq + ToString>(
    pragma: &'static str,
    expected: T,
    found: T,
) -> Result<(), Failure> {
    if expected == found {
        Ok(())
    } else {
        Err(StoreError::Pragma {
            pragma,
            expected: expected.to_string(),
            found: found.to_string(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    fn code(c: i32) -> StoreError {
        map_sql(rusqlite::Error::SqliteFailure(ffi::Error::new(c), None))
    }

    #[test]
    fn result_codes_map_to_kinds() {
        for c in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(matches!(code(c), StoreError::Unavailable { .. }), "{c}");
        }
        for c in [ffi::SQLITE_CORRUPT, ffi::SQLITE_NOTADB] {
            assert!(matches!(code(c), StoreError::Corrupt { .. }), "{c}");
        }
        assert!(matches!(
            code(ffi::SQLITE_CONSTRAINT_UNIQUE),
            StoreError::Conflict { .. }
        ));
    }
}
