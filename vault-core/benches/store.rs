//! Store throughput against a bare rusqlite loop, on tables that already hold many rows.
//!
//! - `insert/bare`: rusqlite alone, same columns and row size as `records` (60-byte blob + small
//!   columns), sequential INTEGER PRIMARY KEY, 1000 rows per transaction, WAL,
//!   `synchronous=FULL`, no secondary index.
//! - `insert/bare+version_index`: the same with the `(template, key_version)` index the store
//!   keeps, to show what that index costs.
//! - `insert/store`: `SqliteStore::insert_records` of 1000 rows per call (ids allocated outside
//!   the timing).
//! - `get/store`: `get_records` of one random id.
//!
//! Tables are pre-filled with `VAULT_BENCH_ROWS` rows (default 100 000; the 1M figure is
//! `VAULT_BENCH_ROWS=1000000 cargo bench -p vault-core --bench store`).

use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::Rng;
use rusqlite::{Connection, params};
use vault_core::store::{NewRecord, Options, SqliteStore, Store};

const BATCH: u64 = 1000;

fn prefill_rows() -> u64 {
    std::env::var("VAULT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn row(id: u64) -> NewRecord {
    NewRecord {
        id,
        template: "pan".into(),
        key_version: 1,
        ciphertext: vec![(id % 251) as u8; 60],
        expires_at: None,
        metadata: None,
        fingerprint: None,
        lookup: None,
        idempotency: None,
        token_check: Some(id),
        created_at: 1_700_000_000,
    }
}

fn bare_open(path: &Path, version_index: bool) -> Connection {
    let c = Connection::open(path).unwrap();
    let mode: String = c
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch(
        "CREATE TABLE records (
            id INTEGER PRIMARY KEY, template TEXT NOT NULL, key_version INTEGER NOT NULL,
            ciphertext BLOB NOT NULL, expires_at INTEGER, metadata TEXT, fp_version INTEGER,
            fingerprint BLOB, lookup BLOB, created_at INTEGER NOT NULL)",
    )
    .unwrap();
    if version_index {
        c.execute_batch("CREATE INDEX records_version ON records (template, key_version)")
            .unwrap();
    }
    c
}

fn bare_insert(c: &mut Connection, start: u64) {
    let tx = c.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                 metadata, fp_version, fingerprint, lookup, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();
        for id in start..start + BATCH {
            let r = row(id);
            stmt.execute(params![
                r.id as i64,
                r.template,
                r.key_version,
                r.ciphertext,
                r.expires_at,
                r.metadata,
                None::<u32>,
                None::<Vec<u8>>,
                r.lookup,
                r.created_at
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn bench(c: &mut Criterion) {
    let rows = prefill_rows();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group(format!("store_{rows}_rows"));
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH));

    for (name, index) in [("insert/bare", false), ("insert/bare+version_index", true)] {
        let mut conn = bare_open(
            &dir.path().join(format!("{name}.db").replace('/', "_")),
            index,
        );
        let mut next = 1;
        while next <= rows {
            bare_insert(&mut conn, next);
            next += BATCH;
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                bare_insert(&mut conn, next);
                next += BATCH;
            })
        });
    }

    let store = SqliteStore::create(dir.path().join("store.db"), &Options::default()).unwrap();
    let batch = || -> Vec<NewRecord> { store.allocate_ids(BATCH).unwrap().map(row).collect() };
    for _ in 0..rows / BATCH {
        store.insert_records(&batch()).unwrap();
    }
    g.bench_function("insert/store", |b| {
        b.iter_batched(
            batch,
            |rs| store.insert_records(&rs).unwrap(),
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Elements(1));
    let max = rows / BATCH * BATCH;
    let mut rng = rand::rng();
    g.bench_function("get/store", |b| {
        b.iter(|| {
            let id = rng.random_range(1..=max);
            let got = store.get_records(&[id]).unwrap();
            assert!(got[0].is_some());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
