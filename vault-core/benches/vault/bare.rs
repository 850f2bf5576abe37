//! The bare `rusqlite` baselines: the same rows as the vault writes, with none of its work.

#[allow(unused_imports)]
use super::*;

pub(super) fn bare_open(path: &Path) -> Connection {
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
    c
}

/// The baseline's table: sequential ids, rows the size of a vault record.
pub(super) struct Bare {
    pub(super) conn: Connection,
    pub(super) next: u64,
    pub(super) blob_len: usize,
    /// Each row also gets a random 32-byte fingerprint under a unique index.
    pub(super) random_index: bool,
}

impl Bare {
    pub(super) fn new(path: &Path, blob_len: usize, index: Index, rows: u64) -> Bare {
        let conn = bare_open(path);
        match index {
            Index::None => {}
            Index::Version => conn
                .execute_batch("CREATE INDEX records_version ON records (template, key_version)")
                .unwrap(),
            Index::RandomUnique => conn
                .execute_batch(
                    "CREATE UNIQUE INDEX records_fp ON records (template, fp_version, fingerprint)",
                )
                .unwrap(),
        }
        let random_index = index == Index::RandomUnique;
        let mut bare = Bare {
            conn,
            next: 1,
            blob_len,
            random_index,
        };
        while bare.next <= rows {
            bare.insert(BATCH);
        }
        bare
    }

    /// Inserts `n` rows in one transaction.
    pub(super) fn insert(&mut self, n: u64) {
        let mut rng = rand::rng();
        let blob = vec![0x5au8; self.blob_len];
        let tx = self.conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                     metadata, fp_version, fingerprint, lookup, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .unwrap();
            for id in self.next..self.next + n {
                let (fpv, fp) = if self.random_index {
                    (Some(1u32), Some(rng.random::<[u8; 32]>().to_vec()))
                } else {
                    (None, None)
                };
                stmt.execute(params![
                    id,
                    VAULTED,
                    1u32,
                    blob,
                    None::<i64>,
                    None::<String>,
                    fpv,
                    fp,
                    None::<Vec<u8>>,
                    1_700_000_000i64
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        self.next += n;
    }

    /// Point reads of `ids` (one read transaction when more than one, like the store).
    pub(super) fn read(&self, ids: &[u64]) -> usize {
        let many = ids.len() > 1;
        if many {
            self.conn.execute_batch("BEGIN").unwrap();
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, template, key_version, ciphertext, expires_at, metadata, \
                 fp_version, fingerprint, lookup, created_at FROM records WHERE id = ?1",
            )
            .unwrap();
        let mut total = 0;
        for id in ids {
            let blob: Vec<u8> = stmt.query_row([id], |r| r.get(3)).unwrap();
            total += blob.len();
        }
        if many {
            self.conn.execute_batch("COMMIT").unwrap();
        }
        total
    }

    /// Rewrites key version and ciphertext of ids `1..=rows`, 1000 rows per transaction.
    pub(super) fn update_all(&mut self, rows: u64, version: u32) {
        let blob = vec![version as u8; self.blob_len];
        let mut id = 1;
        while id <= rows {
            let tx = self.conn.transaction().unwrap();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE records SET key_version = ?2, ciphertext = ?3 WHERE id = ?1",
                    )
                    .unwrap();
                for i in id..(id + BATCH).min(rows + 1) {
                    assert_eq!(stmt.execute(params![i, version, blob]).unwrap(), 1);
                }
            }
            tx.commit().unwrap();
            id += BATCH;
        }
    }
}
