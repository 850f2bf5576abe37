//! The vault facade against bare `rusqlite` baselines, in the same run, on a real SQLite file
//! (WAL, `synchronous=FULL`) already holding `VAULT_BENCH_ROWS` vaulted records (default
//! 100 000; the figures are at 1M: `VAULT_BENCH_ROWS=1000000`).
//!
//! | vault measurement                                   | baseline                                   |
//! |-----------------------------------------------------|--------------------------------------------|
//! | `tokenize/vaulted-batch`: `tokenize_batch` of 1000   | `insert/bare`: 1000 rows of the same size,  |
//! | (non-deterministic, opaque)                         | sequential INTEGER id, one transaction      |
//! | `tokenize/deterministic-batch`: 1000 new values      | `insert/bare`, and `insert/bare+random_index`|
//! |                                                     | (a unique index on a random 32-byte column) |
//! | `tokenize/single`: `tokenize`, durable per call      | `insert/bare-single`: one row, one commit   |
//! | `detokenize/single`, `detokenize/batch-100`          | `read/bare-single`, `read/bare-batch-100`   |
//! | `rewrap/run`: rotate, `rewrap_start` + `rewrap_run`  | `update/bare`: UPDATE of the same rows, 1000 |
//! | (batch 1000) over every record of the template      | per transaction                             |
//! | `pan-fpe/vault-tokenize`, `pan-fpe/template-encrypt` | `pan-fpe/ff1-encrypt` on 16 digits          |
//!
//! Every measurement also records its own timings; at the end a table of medians and
//! vault/baseline ratios is printed on stderr (the figures BENCHMARKS.md quotes).
//!
//! `VAULT_BENCH_DIR` chooses where the database files go (default: the system temp dir; it
//! must be a real disk for the fsync figures to mean anything).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use rand::Rng;
use rusqlite::{Connection, params};
use vault_core::fpe::Ff1;
use vault_core::secret::SecretString;
use vault_core::store::Store;
use vault_core::store::sqlite::{Options, SqliteStore};
use vault_core::template::Template;
use vault_core::vault::{Mode, RootInit, TemplateConfig, TokenShape, TokenizeItem, Vault};

const BATCH: u64 = 1000;
const DETOK_BATCH: usize = 100;
/// Non-deterministic opaque template (tokenize, detokenize, rewrap).
const VAULTED: &str = "pan_vault";
/// Deterministic opaque template.
const DET: &str = "pan_det";
/// FPE template.
const FPE: &str = "pan";

fn prefill_rows() -> u64 {
    std::env::var("VAULT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// A Luhn-valid 16-digit PAN, distinct for each `n` < 10^14.
fn pan(n: u64) -> String {
    let mut digits = format!("4{:014}", n % 100_000_000_000_000).into_bytes();
    // Luhn: double every second digit from the right, counting the check digit as first.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push(b'0' + ((10 - sum % 10) % 10) as u8);
    // Only ASCII digits were pushed.
    String::from_utf8(digits).unwrap()
}

/// Values `start..start+n` as PANs.
fn pans(start: u64, n: u64) -> Vec<String> {
    (start..start + n).map(pan).collect()
}

fn items(values: &[String]) -> Vec<TokenizeItem<'_>> {
    values.iter().map(|v| TokenizeItem::new(v)).collect()
}

/// Per-measurement timings (element rate of each criterion sample), for the closing summary.
#[derive(Default)]
struct Recorder {
    samples: RefCell<BTreeMap<String, Vec<f64>>>,
    sample_size: RefCell<BTreeMap<String, usize>>,
}

impl Recorder {
    fn push(&self, id: &str, elements: u64, took: Duration) {
        self.samples
            .borrow_mut()
            .entry(id.to_owned())
            .or_default()
            .push(elements as f64 / took.as_secs_f64().max(1e-12));
    }

    /// Median element rate over the measurement samples (criterion runs the routine for the
    /// warm-up first, then once per sample: the last `sample_size` entries are the samples).
    fn median(&self, id: &str) -> Option<f64> {
        let all = self.samples.borrow();
        let v = all.get(id)?;
        let n = self
            .sample_size
            .borrow()
            .get(id)
            .copied()
            .unwrap_or(v.len());
        let mut s: Vec<f64> = v[v.len().saturating_sub(n)..].to_vec();
        s.sort_by(f64::total_cmp);
        Some(if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        })
    }
}

/// Registers `id` in `g`; `run(iters)` returns (elements done, time measured).
fn measure(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rec: &Recorder,
    id: &str,
    elements: u64,
    sample_size: usize,
    mut run: impl FnMut(u64) -> (u64, Duration),
) {
    let full = format!("{}/{id}", group_name(g));
    g.sample_size(sample_size);
    g.throughput(Throughput::Elements(elements));
    rec.sample_size
        .borrow_mut()
        .insert(full.clone(), sample_size);
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (done, took) = run(iters);
            rec.push(&full, done, took);
            took
        })
    });
}

thread_local! {
    static GROUP: RefCell<String> = const { RefCell::new(String::new()) };
}

fn group_name(_: &BenchmarkGroup<'_, WallTime>) -> String {
    GROUP.with(|g| g.borrow().clone())
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    GROUP.with(|g| *g.borrow_mut() = name.to_owned());
    c.benchmark_group(name)
}

// ----- bare rusqlite baselines -----

fn bare_open(path: &Path) -> Connection {
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
struct Bare {
    conn: Connection,
    next: u64,
    blob_len: usize,
    /// Each row also gets a random 32-byte fingerprint under a unique index.
    random_index: bool,
}

/// Secondary indexes of a baseline table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Index {
    /// None: the bare rate.
    None,
    /// The store's `records_version (template, key_version)`, to show what it costs.
    Version,
    /// A unique index on a random 32-byte column, like the deterministic fingerprint.
    RandomUnique,
}

impl Bare {
    fn new(path: &Path, blob_len: usize, index: Index, rows: u64) -> Bare {
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
    fn insert(&mut self, n: u64) {
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
    fn read(&self, ids: &[u64]) -> usize {
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
    fn update_all(&mut self, rows: u64, version: u32) {
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

// ----- the vault -----

fn templates() -> Vec<TemplateConfig> {
    let vaulted = |name: &str, deterministic| {
        TemplateConfig::new(
            Template::pan(name, 6, 4).unwrap(),
            Mode::Vaulted {
                deterministic,
                shape: TokenShape::Opaque,
            },
        )
    };
    vec![
        TemplateConfig::new(Template::builtin(FPE).unwrap(), Mode::Fpe),
        vaulted(VAULTED, false),
        vaulted(DET, true),
    ]
}

fn new_vault(path: &Path) -> (Vault, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::create(path, &Options::default()).unwrap());
    let key = vault_core::keys::root::from_hex(&SecretString::from("42".repeat(32))).unwrap();
    let (vault, _) = Vault::create(store.clone(), templates(), RootInit::Key(key)).unwrap();
    (vault, store)
}

/// Tokenizes `rows` values in batches of 1000; returns the tokens.
fn prefill(vault: &Vault, template: &str, first: u64, rows: u64) -> Vec<String> {
    let mut tokens = Vec::with_capacity(rows as usize);
    let mut n = first;
    while n < first + rows {
        let values = pans(n, BATCH.min(first + rows - n));
        for r in vault.tokenize_batch(template, &items(&values)).unwrap() {
            tokens.push(r.unwrap().token);
        }
        n += values.len() as u64;
    }
    tokens
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn bench(c: &mut Criterion, rec: &Recorder) {
    let rows = prefill_rows();
    let dir = match std::env::var_os("VAULT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    eprintln!("vault bench: N = {rows}, files in {}", dir.path().display());

    let (vault, store) = new_vault(&dir.path().join("vault.db"));
    let t = Instant::now();
    let tokens = prefill(&vault, VAULTED, 0, rows);
    eprintln!(
        "prefill {VAULTED}: {rows} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The baselines write rows of the vault's record size.
    let blob_len = store.get_records(&[1]).unwrap()[0]
        .as_ref()
        .unwrap()
        .ciphertext
        .len();
    let t = Instant::now();
    let mut bare = Bare::new(&dir.path().join("bare.db"), blob_len, Index::None, rows);
    let mut bare_version = Bare::new(
        &dir.path().join("bare_version.db"),
        blob_len,
        Index::Version,
        rows,
    );
    eprintln!(
        "prefill bare: {rows} rows of {blob_len} bytes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Rewrap first, while the table holds exactly the prefilled records of the template.
    {
        let mut g = group(c, "rewrap");
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(Duration::from_millis(1));
        for (id, table) in [
            ("update/bare", &mut bare),
            ("update/bare+version_index", &mut bare_version),
        ] {
            let mut version = 1;
            measure(&mut g, rec, id, rows, 10, |iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    version += 1;
                    table.update_all(rows, version);
                }
                (rows * iters, t.elapsed())
            });
        }
        measure(&mut g, rec, "rewrap/run", rows, 10, |iters| {
            let mut took = Duration::ZERO;
            let mut done = 0;
            for _ in 0..iters {
                vault.rotate(&format!("data/{VAULTED}")).unwrap();
                let t = Instant::now();
                let job = vault.rewrap_start(VAULTED).unwrap();
                let job = vault
                    .rewrap_run(job.id, BATCH as usize, &mut |_| true)
                    .unwrap();
                took += t.elapsed();
                assert_eq!(job.processed, rows, "every record rewrapped");
                done += job.processed;
            }
            (done, took)
        });
        g.finish();
    }

    let t = Instant::now();
    // Deterministic values live above every value the other benches use.
    const DET_BASE: u64 = 1 << 40;
    prefill(&vault, DET, DET_BASE, rows);
    let mut det_next = DET_BASE + rows;
    let mut bare_rand = Bare::new(
        &dir.path().join("bare_rand.db"),
        blob_len,
        Index::RandomUnique,
        rows,
    );
    eprintln!(
        "prefill {DET} and the random-index baseline: {rows} rows each in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    {
        let mut g = group(c, "tokenize");
        measure(&mut g, rec, "insert/bare", BATCH, 20, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                bare.insert(BATCH);
            }
            (BATCH * iters, t.elapsed())
        });
        measure(
            &mut g,
            rec,
            "insert/bare+random_index",
            BATCH,
            20,
            |iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    bare_rand.insert(BATCH);
                }
                (BATCH * iters, t.elapsed())
            },
        );
        let values = pans(1 << 41, BATCH);
        let batch = items(&values);
        measure(&mut g, rec, "vaulted-batch", BATCH, 20, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(vault.tokenize_batch(VAULTED, &batch).unwrap());
            }
            (BATCH * iters, t.elapsed())
        });
        measure(&mut g, rec, "deterministic-batch", BATCH, 20, |iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let values = pans(det_next, BATCH);
                det_next += BATCH;
                let batch = items(&values);
                let t = Instant::now();
                let out = vault.tokenize_batch(DET, &batch).unwrap();
                took += t.elapsed();
                debug_assert!(out.iter().all(|r| r.as_ref().is_ok_and(|t| !t.existing)));
            }
            (BATCH * iters, took)
        });
        g.finish();
    }

    {
        let mut g = group(c, "tokenize-single");
        g.sampling_mode(SamplingMode::Flat);
        measure(&mut g, rec, "insert/bare-single", 1, 20, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                bare.insert(1);
            }
            (iters, t.elapsed())
        });
        let value = pan(7);
        measure(&mut g, rec, "vault-single", 1, 20, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(vault.tokenize(VAULTED, &value).unwrap());
            }
            (iters, t.elapsed())
        });
        g.finish();
    }

    {
        let mut g = group(c, "detokenize");
        let mut rng = rand::rng();
        let max = rows;
        measure(&mut g, rec, "read/bare-single", 1, 50, |iters| {
            let ids: Vec<u64> = (0..iters).map(|_| rng.random_range(1..=max)).collect();
            let t = Instant::now();
            for id in &ids {
                black_box(bare.read(std::slice::from_ref(id)));
            }
            (iters, t.elapsed())
        });
        measure(&mut g, rec, "vault-single", 1, 50, |iters| {
            let picks: Vec<&str> = (0..iters)
                .map(|_| tokens[rng.random_range(0..tokens.len())].as_str())
                .collect();
            let t = Instant::now();
            for token in &picks {
                black_box(vault.detokenize(VAULTED, token, None).unwrap());
            }
            (iters, t.elapsed())
        });
        let n = DETOK_BATCH as u64;
        measure(&mut g, rec, "read/bare-batch-100", n, 50, |iters| {
            let ids: Vec<Vec<u64>> = (0..iters)
                .map(|_| (0..n).map(|_| rng.random_range(1..=max)).collect())
                .collect();
            let t = Instant::now();
            for batch in &ids {
                black_box(bare.read(batch));
            }
            (n * iters, t.elapsed())
        });
        measure(&mut g, rec, "vault-batch-100", n, 50, |iters| {
            let picks: Vec<Vec<&str>> = (0..iters)
                .map(|_| {
                    (0..n)
                        .map(|_| tokens[rng.random_range(0..tokens.len())].as_str())
                        .collect()
                })
                .collect();
            let t = Instant::now();
            for batch in &picks {
                let out = vault.detokenize_batch(VAULTED, batch, None).unwrap();
                debug_assert!(out.iter().all(Result::is_ok));
                black_box(out);
            }
            (n * iters, t.elapsed())
        });
        g.finish();
    }

    {
        let mut g = group(c, "pan-fpe");
        let ff1 = Ff1::new(&[0x42; 32], 10).unwrap();
        let template = Template::builtin(FPE).unwrap();
        // PAN tokens cycle-walk until their Luhn residue names the key-version slot, so the
        // cost depends on the value and key: cycle through many values.
        let values = pans(1 << 42, 1024);
        let digits: Vec<Vec<u16>> = values
            .iter()
            .map(|v| v.bytes().map(|b| u16::from(b - b'0')).collect())
            .collect();
        let mut buf = vec![0u16; 16];
        let mut i = 0;
        measure(&mut g, rec, "ff1-encrypt", 1, 50, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                buf.copy_from_slice(&digits[i % digits.len()]);
                i += 1;
                ff1.encrypt_in_place(black_box(b"pan\x00v1"), black_box(&mut buf))
                    .unwrap();
            }
            (iters, t.elapsed())
        });
        measure(&mut g, rec, "template-encrypt", 1, 50, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let v = &values[i % values.len()];
                i += 1;
                black_box(template.encrypt(&ff1, 1, black_box(v)).unwrap());
            }
            (iters, t.elapsed())
        });
        measure(&mut g, rec, "vault-tokenize", 1, 50, |iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let v = &values[i % values.len()];
                i += 1;
                black_box(vault.tokenize(FPE, black_box(v)).unwrap());
            }
            (iters, t.elapsed())
        });
        g.finish();
    }
    drop(vault);
    drop(store);
    eprintln!("load average at the end: {}", load_average());
    summary(rec, rows);
}

/// The closing table: median rates and vault/baseline ratios.
fn summary(rec: &Recorder, rows: u64) {
    let rows_spec: &[(&str, &str, &str, &str)] = &[
        (
            "tokenize/vaulted-batch",
            "tokenize/insert/bare",
            "rows/s",
            ">= 0.50",
        ),
        (
            "tokenize/deterministic-batch",
            "tokenize/insert/bare",
            "rows/s",
            "",
        ),
        (
            "tokenize/deterministic-batch",
            "tokenize/insert/bare+random_index",
            "rows/s",
            "",
        ),
        (
            "tokenize-single/vault-single",
            "tokenize-single/insert/bare-single",
            "calls/s",
            "",
        ),
        (
            "detokenize/vault-single",
            "detokenize/read/bare-single",
            "lookups/s",
            "",
        ),
        (
            "detokenize/vault-batch-100",
            "detokenize/read/bare-batch-100",
            "lookups/s",
            ">= 100k/s",
        ),
        (
            "rewrap/rewrap/run",
            "rewrap/update/bare",
            "records/s",
            ">= 200k/s",
        ),
        (
            "rewrap/rewrap/run",
            "rewrap/update/bare+version_index",
            "records/s",
            "",
        ),
        (
            "pan-fpe/template-encrypt",
            "pan-fpe/ff1-encrypt",
            "values/s",
            "",
        ),
        (
            "pan-fpe/vault-tokenize",
            "pan-fpe/ff1-encrypt",
            "values/s",
            "",
        ),
    ];
    eprintln!();
    eprintln!("## vault vs bare, N = {rows} (medians of criterion samples)");
    eprintln!();
    eprintln!(
        "| {:<30} | {:>12} | {:<36} | {:>12} | {:>6} | {:<10} | {:<9} |",
        "vault", "rate", "baseline", "rate", "ratio", "target", "unit"
    );
    eprintln!(
        "|{:-<32}|{:->14}|{:-<38}|{:->14}|{:->8}|{:-<12}|{:-<11}|",
        "", "", "", "", "", "", ""
    );
    for (ours, base, unit, target) in rows_spec {
        let (Some(a), Some(b)) = (rec.median(ours), rec.median(base)) else {
            continue;
        };
        eprintln!(
            "| {:<30} | {:>12.0} | {:<36} | {:>12.0} | {:>6.3} | {:<10} | {:<9} |",
            ours,
            a,
            base,
            b,
            a / b,
            target,
            unit
        );
    }
}

fn main() {
    let rec = Recorder::default();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rec);
    c.final_summary();
}
