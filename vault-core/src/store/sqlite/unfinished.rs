//! Recognising a database file that a creation left unfinished.
//!
//! Creating a vault writes the file in steps: the empty file, the switch to WAL, the schema
//! (one transaction), then the vault's metadata (one insert-only transaction, the moment the
//! vault exists), then its keys. A crash before the metadata commits leaves a file that holds
//! nothing anyone was ever answered for, but that does not open as a vault: zero bytes beside
//! a journal, a header without a schema, or the schema without a vault. [`holds_nothing`] says
//! whether a file is such a leftover, so that the next creation can start over instead of
//! asking an operator to find out by hand; anything else (a foreign file, a file with one row
//! in it) is never called unfinished, and is left alone.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// The tables whose rows a vault writes first; a file with none in any holds no vault data.
const WRITTEN_BY_A_VAULT: [&str; 5] = [
    "meta",
    "key_names",
    "key_versions",
    "records",
    "idempotency",
];

/// Whether the database at `path` is a leftover of an interrupted creation: no tables at all,
/// or this crate's schema with not one row in [`WRITTEN_BY_A_VAULT`]. A file that is not a
/// SQLite database, or that any query fails on, is not (the caller refuses it as before).
/// Opening it lets SQLite roll back a hot journal or replay a WAL first, so what is judged is
/// what the file really holds.
pub(crate) fn holds_nothing(path: &Path) -> Result<bool, StoreError> {
    let len = std::fs::metadata(path)
        .map_err(|e| StoreError::unavailable(format!("cannot read {}", path.display())).because(e))?
        .len();
    if len > 0 && super::conn::check_header(path).is_err() {
        return Ok(false);
    }
    let Ok(c) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Ok(false);
    };
    let count = |sql: &str| -> Option<i64> { c.query_row(sql, [], |r| r.get(0)).ok() };
    match count("SELECT count(*) FROM sqlite_master") {
        Some(0) => return Ok(true),
        Some(_) => {}
        None => return Ok(false),
    }
    let version: Option<i64> = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ok();
    if version.is_none_or(|v| v < 1) {
        // Tables but no schema version of ours: a foreign file.
        return Ok(false);
    }
    for table in WRITTEN_BY_A_VAULT {
        if count(&format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)"
        )) != Some(0)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The database file and its companions, in the order they are removed (the main file last,
/// so an interrupted removal still leaves a file that [`holds_nothing`] recognises).
pub(crate) fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["-journal", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect();
    out.push(path.to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::{Options, SqliteStore};

    #[test]
    fn leftovers_are_recognised_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.db");

        std::fs::write(&p, b"").unwrap();
        assert!(holds_nothing(&p).unwrap(), "zero bytes");
        std::fs::write(dir.path().join("vault.db-journal"), b"").unwrap();
        assert!(holds_nothing(&p).unwrap(), "zero bytes beside a journal");
        for f in files(&p) {
            let _ = std::fs::remove_file(f);
        }

        // The schema without a vault.
        drop(SqliteStore::create(&p, &Options::default()).unwrap());
        assert!(holds_nothing(&p).unwrap(), "schema, no rows");
        // One row anywhere, and it is a vault's file.
        let s = SqliteStore::open(&p, &Options::default()).unwrap();
        s.meta_put(&[("anything", b"1")]).unwrap();
        drop(s);
        assert!(!holds_nothing(&p).unwrap(), "a row in meta");

        // A header and no table (journal mode switched, nothing else).
        let q = dir.path().join("header.db");
        let c = Connection::open(&q).unwrap();
        let _: String = c
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .unwrap();
        drop(c);
        assert!(holds_nothing(&q).unwrap(), "header only");

        // Foreign files are never unfinished vaults.
        let f = dir.path().join("foreign.db");
        let c = Connection::open(&f).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        assert!(!holds_nothing(&f).unwrap(), "a foreign database");
        let t = dir.path().join("text.db");
        std::fs::write(&t, b"not a database at all, just text").unwrap();
        assert!(!holds_nothing(&t).unwrap(), "not SQLite");
        std::fs::write(&t, b"short").unwrap();
        assert!(!holds_nothing(&t).unwrap(), "shorter than a header");
    }
}
