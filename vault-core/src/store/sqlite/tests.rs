//! Unit tests of `sqlite`. The `Store` contract itself (outcomes, compare-and-set, retire
//! checks, rewrap replay, leases) is tested once for both backends by the storage suite
//! (`tests/tests/storage`); what is left here is SQLite's own: the writer thread, pragmas,
//! files, id blocks, the rewrap scan.

use std::sync::Arc;
use std::sync::mpsc;

use tempfile::TempDir;

use crate::store::ID_BLOCK;

use super::*;

fn new_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(dir.path().join("vault.db"), &Options::default()).unwrap();
    (dir, store)
}

fn rec(id: u64) -> NewRecord {
    NewRecord {
        id,
        template: "pan".into(),
        key_version: 1,
        ciphertext: vec![id as u8; 60],
        expires_at: None,
        metadata: None,
        fingerprint: None,
        lookup: None,
        idempotency: None,
        token_check: Some(id),
        created_at: 1_700_000_000,
    }
}

#[test]
fn allocate_ids_never_repeats_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let mut seen = Vec::new();
    {
        let s = SqliteStore::create(&path, &Options::default()).unwrap();
        seen.push(s.allocate_ids(3).unwrap());
        seen.push(s.allocate_ids(0).unwrap());
        seen.push(s.allocate_ids(ID_BLOCK + 5000).unwrap());
        seen.push(s.allocate_ids(2).unwrap());
    }
    for _ in 0..2 {
        let s = SqliteStore::open(&path, &Options::default()).unwrap();
        seen.push(s.allocate_ids(10).unwrap());
    }
    assert_eq!(seen[0], 1..4);
    // Within one open, ranges join even across a block boundary.
    assert_eq!(seen[2], 4..4 + ID_BLOCK + 5000);
    assert_eq!(seen[3].start, seen[2].end);
    // A reopen starts past everything reserved before.
    assert!(seen[4].start >= 2 * ID_BLOCK, "{:?}", seen[4]);
    let mut all: Vec<u64> = seen.iter().flat_map(|r| r.clone()).collect();
    let n = all.len();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ids grow");
    all.dedup();
    assert_eq!(all.len(), n);
}

#[test]
fn rewrap_scan_walks_the_rowid() {
    let (_d, s) = new_store();
    let plan: Vec<String> = s
        .readers
        .with(|c| {
            let mut stmt = c.prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {RECORD_COLUMNS} FROM records NOT INDEXED \
                 WHERE id > 1 AND template = 'a' \
                   AND (key_version < 2 OR (fingerprint IS NOT NULL AND fp_version < 2)) \
                 ORDER BY id LIMIT 10"
            ))?;
            Ok(stmt
                .query_map([], |r| r.get::<_, String>(3))?
                .collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(
        plan,
        vec!["SEARCH records USING INTEGER PRIMARY KEY (rowid>?)"]
    );
}

/// Holds the writer thread inside a job until the returned sender is used, so the test can
/// queue jobs behind it deterministically.
fn block_writer(s: &Arc<SqliteStore>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (started, is_started) = mpsc::channel::<()>();
    let s2 = Arc::clone(s);
    let h = std::thread::spawn(move || {
        s2.writer
            .submit(move |_| {
                started.send(()).unwrap();
                wait.recv().unwrap();
                Ok(())
            })
            .unwrap();
    });
    is_started.recv().unwrap();
    (release, h)
}

fn wait_queued(s: &SqliteStore, n: u64) {
    while s.writer_stats().queued < n {
        std::thread::yield_now();
    }
}

#[test]
fn group_commit_batches_waiting_jobs() {
    let (_d, s) = new_store();
    let s = Arc::new(s);
    let ids = s.allocate_ids(8).unwrap();
    let before = s.writer_stats();
    let (release, blocker) = block_writer(&s);
    let writers: Vec<_> = ids
        .clone()
        .map(|id| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.insert_records(&[rec(id)]).unwrap())
        })
        .collect();
    wait_queued(&s, 8);
    release.send(()).unwrap();
    blocker.join().unwrap();
    for w in writers {
        assert_eq!(w.join().unwrap(), vec![InsertOutcome::Inserted]);
    }
    let after = s.writer_stats();
    // One transaction for the blocker, one for the eight inserts.
    assert_eq!(after.transactions - before.transactions, 2);
    assert_eq!(after.jobs - before.jobs, 9);
    let ids: Vec<u64> = ids.collect();
    assert!(s.get_records(&ids).unwrap().iter().all(Option::is_some));
}

#[test]
fn failing_job_does_not_fail_its_group() {
    let (_d, s) = new_store();
    let s = Arc::new(s);
    let ids = s.allocate_ids(2).unwrap();
    s.insert_records(&[rec(ids.start)]).unwrap();
    let before = s.writer_stats();
    let (release, blocker) = block_writer(&s);
    let (s1, s2) = (Arc::clone(&s), Arc::clone(&s));
    let (dup, good) = (ids.start, ids.start + 1);
    let bad = std::thread::spawn(move || s1.insert_records(&[rec(good), rec(dup)]));
    wait_queued(&s, 1);
    let ok = std::thread::spawn(move || s2.insert_records(&[rec(good)]));
    wait_queued(&s, 2);
    release.send(()).unwrap();
    blocker.join().unwrap();
    let bad = bad.join().unwrap().unwrap_err();
    assert!(matches!(bad, StoreError::Conflict { .. }), "{bad:?}");
    // The failed job's first row was rolled back with its savepoint, so `good` is free.
    assert_eq!(ok.join().unwrap().unwrap(), vec![InsertOutcome::Inserted]);
    assert_eq!(s.writer_stats().transactions - before.transactions, 2);
    assert!(s.get_records(&[good]).unwrap()[0].is_some());
}

#[test]
fn eight_concurrent_writers() {
    let (_d, s) = new_store();
    let s = Arc::new(s);
    let before = s.writer_stats();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..50 {
                    let ids = s.allocate_ids(3).unwrap();
                    let rows: Vec<_> = ids.clone().map(rec).collect();
                    assert!(
                        s.insert_records(&rows)
                            .unwrap()
                            .iter()
                            .all(|o| *o == InsertOutcome::Inserted)
                    );
                    mine.extend(ids);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n);
    assert_eq!(s.get_records(&all).unwrap().iter().flatten().count(), n);
    let st = s.writer_stats();
    assert!(st.transactions - before.transactions <= st.jobs - before.jobs);
}

#[test]
fn pragmas_are_set_on_every_connection() {
    let (_d, s) = new_store();
    let read = |c: &Connection| -> Result<(String, i64, i64, i64), Failure> {
        Ok((
            c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
            c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
            c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
            c.pragma_query_value(None, "temp_store", |r| r.get(0))?,
        ))
    };
    let w = s.writer.submit(move |c| read(c)).unwrap();
    assert_eq!(w, ("wal".into(), 2, 1, 2));
    assert_eq!(s.readers.with(read).unwrap(), ("wal".into(), 2, 1, 2));

    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        synchronous: Synchronous::Normal,
        ..Options::default()
    };
    let n = SqliteStore::create(dir.path().join("n.db"), &opts).unwrap();
    assert_eq!(n.writer.submit(move |c| read(c)).unwrap().1, 1);
}

#[test]
fn full_disk_is_unavailable_writes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let limit = PageLimit::new();
    let opts = Options {
        page_limit: Some(limit.clone()),
        ..Options::default()
    };
    let s = SqliteStore::create(dir.path().join("vault.db"), &opts).unwrap();
    let ids = s.allocate_ids(10_000).unwrap().collect::<Vec<_>>();
    let big = |id: u64| NewRecord {
        ciphertext: vec![7; 3000],
        ..rec(id)
    };
    s.insert_records(&[big(ids[0])]).unwrap();
    // The "disk" holds what is there now (SQLite keeps at least the current size).
    limit.set(1);
    let mut stored = 1;
    let mut full = None;
    for chunk in ids[1..].chunks(10) {
        let rows: Vec<_> = chunk.iter().map(|&i| big(i)).collect();
        match s.insert_records(&rows) {
            Ok(_) => stored += rows.len(),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("a limited database fills up");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // Nothing half-written: exactly the acknowledged batches are there.
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), stored as u64);
    let present = s.get_records(&ids[..stored + 10]).unwrap();
    assert_eq!(present.iter().flatten().count(), stored);
    s.integrity_check().unwrap();
    // The probe sees no room, though a small write may still fit in a page.
    assert!(matches!(
        s.probe_write(),
        Err(StoreError::Unavailable { .. })
    ));
    // Space comes back: writes work again without reopening.
    limit.set(0);
    s.probe_write().unwrap();
    let rows: Vec<_> = ids[stored..stored + 10].iter().map(|&i| big(i)).collect();
    s.insert_records(&rows).unwrap();
    assert_eq!(
        s.count_by_key_version("pan", 1).unwrap(),
        stored as u64 + 10
    );
}

#[test]
fn pragma_read_back_mismatch_refuses() {
    // An in-memory database cannot use WAL: journal_mode reads back "memory".
    let err = conn::open(Path::new(":memory:"), &Options::default(), Role::Writer).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Pragma {
                pragma: "journal_mode",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn create_refuses_existing_and_open_refuses_missing_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let err = SqliteStore::open(&path, &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    std::fs::write(&path, b"").unwrap();
    let err = SqliteStore::create(&path, &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = SqliteStore::open(&path, &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // Never recreated: the file is still there, still empty.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // A foreign SQLite database (schema version 0) is refused and left as it was.
    let foreign = dir.path().join("foreign.db");
    let c = Connection::open(&foreign).unwrap();
    c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(c);
    let bytes = std::fs::read(&foreign).unwrap();
    let err = SqliteStore::open(&foreign, &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::read(&foreign).unwrap(), bytes);
}

/// A populated database, closed (WAL checkpointed into the main file); returns its bytes.
fn populated(path: &Path) -> Vec<u8> {
    let s = SqliteStore::create(path, &Options::default()).unwrap();
    for _ in 0..20 {
        let ids = s.allocate_ids(100).unwrap();
        let rows: Vec<_> = ids
            .map(|i| {
                let mut r = rec(i);
                r.fingerprint = Some((1, i.to_be_bytes().repeat(4)));
                r
            })
            .collect();
        s.insert_records(&rows).unwrap();
    }
    drop(s);
    std::fs::read(path).unwrap()
}

#[test]
fn truncated_or_garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let bytes = populated(&path);
    assert!(bytes.len() > 64 * 1024, "{}", bytes.len());
    for cut in [50, 100, 4096, bytes.len() / 2, bytes.len() - 4096] {
        let p = dir.path().join(format!("cut{cut}.db"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        // Detected at open (header checks, schema read, the counter check's walk down
        // the right edge of the records tree), before any caller sees the store.
        let err = SqliteStore::open(&p, &Options::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "cut at {cut}: {err:?}"
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            cut as u64,
            "file untouched"
        );
    }
    let p = dir.path().join("garbage.db");
    std::fs::write(&p, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&p, &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // The intact file still opens and checks clean.
    let s = SqliteStore::open(&path, &Options::default()).unwrap();
    s.integrity_check().unwrap();
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    drop(SqliteStore::create(&path, &Options::default()).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = SqliteStore::open(&path, &Options::default()).unwrap_err();
    let current = schema::current();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, supported } if supported == current),
        "{err:?}"
    );
}

#[test]
fn files_lists_db_wal_shm() {
    let (dir, s) = new_store();
    let files = s.files();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["vault.db", "vault.db-wal", "vault.db-shm"]);
    // Nothing else in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), files.len());
    s.integrity_check().unwrap();
    assert_eq!(s.path(), dir.path().join("vault.db"));
}

#[test]
fn a_sqlite_failure_keeps_its_cause_and_kind() {
    let corrupt = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        None,
    );
    let e = conn::map_sql(corrupt);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    let source = std::error::Error::source(&e).expect("the SQLite error is the source");
    assert!(source.downcast_ref::<rusqlite::Error>().is_some());

    let full =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    let e = conn::map_sql(full).within("appending a record");
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("storage unavailable: appending a record: "),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
}
