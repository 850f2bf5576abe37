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
//! | (batch 1000) over every record of the template      | per transaction (and `+version_index`)      |
//! | `pan-fpe/vault-tokenize`, `pan-fpe/template-encrypt` | `pan-fpe/ff1-encrypt` on 16 digits          |
//!
//! Every measurement also records its own timings; at the end two tables go to stderr: the
//! criterion medians side by side, and interleaved rounds (baseline and vault timed back to
//! back, median of the per-round ratios), which hold up on a machine whose disk switches
//! between quiet and contended within seconds. BENCHMARKS.md quotes the interleaved figures.
//!
//! `VAULT_BENCH_DIR` chooses where the database files go (default: the system temp dir; it
//! must be a real disk for the fsync figures to mean anything).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::bare::Bare;
use self::measure::{Recorder, group, measure, median, paired};
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
#[path = "vault/bare.rs"]
mod bare;
#[path = "vault/measure.rs"]
mod measure;

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

/// Interleaved rounds of one comparison: (label, unit, target, [(vault rate, baseline rate)]).
type Pair = (String, &'static str, &'static str, Vec<(f64, f64)>);

/// One side of a comparison: `run(iters)` returns (elements done, time measured).
type Run<'a> = &'a mut dyn FnMut(u64) -> (u64, Duration);

thread_local! {
    static GROUP: RefCell<String> = const { RefCell::new(String::new()) };
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
    eprintln!("load average at the start: {}", load_average());

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
        "prefill bare tables: {rows} rows of {blob_len} bytes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Rewrap first, while the table holds exactly the prefilled records of the template.
    {
        let mut g = group(c, "rewrap");
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(Duration::from_millis(1));
        let mut version = 1;
        let mut update_bare = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                version += 1;
                bare.update_all(rows, version);
            }
            (rows * iters, t.elapsed())
        };
        let mut version_ix = 1;
        let mut update_indexed = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                version_ix += 1;
                bare_version.update_all(rows, version_ix);
            }
            (rows * iters, t.elapsed())
        };
        let mut rewrap = |iters: u64| {
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
        };
        measure(&mut g, rec, "update/bare", rows, 10, &mut update_bare);
        measure(
            &mut g,
            rec,
            "update/bare+version_index",
            rows,
            10,
            &mut update_indexed,
        );
        measure(&mut g, rec, "rewrap/run", rows, 10, &mut rewrap);
        g.finish();
        let rounds = 5;
        paired(
            rec,
            "rewrap/rewrap/run",
            "rewrap vs update/bare",
            "records/s",
            ">= 200k/s",
            rounds,
            (1, 1),
            &mut rewrap,
            &mut update_bare,
        );
        paired(
            rec,
            "rewrap/rewrap/run",
            "rewrap vs update/bare+version_index",
            "records/s",
            "",
            rounds,
            (1, 1),
            &mut rewrap,
            &mut update_indexed,
        );
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
        let mut insert_bare = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                bare.insert(BATCH);
            }
            (BATCH * iters, t.elapsed())
        };
        let mut insert_random = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                bare_rand.insert(BATCH);
            }
            (BATCH * iters, t.elapsed())
        };
        let values = pans(1 << 41, BATCH);
        let batch = items(&values);
        let mut vaulted = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(vault.tokenize_batch(VAULTED, &batch).unwrap());
            }
            (BATCH * iters, t.elapsed())
        };
        let mut deterministic = |iters: u64| {
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
        };
        measure(&mut g, rec, "insert/bare", BATCH, 20, &mut insert_bare);
        measure(
            &mut g,
            rec,
            "insert/bare+random_index",
            BATCH,
            20,
            &mut insert_random,
        );
        measure(&mut g, rec, "vaulted-batch", BATCH, 20, &mut vaulted);
        measure(
            &mut g,
            rec,
            "deterministic-batch",
            BATCH,
            20,
            &mut deterministic,
        );
        g.finish();
        paired(
            rec,
            "tokenize/vaulted-batch",
            "tokenize_batch vs insert/bare",
            "rows/s",
            ">= 0.50",
            30,
            (5, 5),
            &mut vaulted,
            &mut insert_bare,
        );
        paired(
            rec,
            "tokenize/deterministic-batch",
            "deterministic batch vs insert/bare",
            "rows/s",
            "",
            10,
            (1, 5),
            &mut deterministic,
            &mut insert_bare,
        );
        paired(
            rec,
            "tokenize/deterministic-batch",
            "deterministic batch vs bare+random_index",
            "rows/s",
            "",
            10,
            (1, 1),
            &mut deterministic,
            &mut insert_random,
        );
    }

    {
        let mut g = group(c, "tokenize-single");
        g.sampling_mode(SamplingMode::Flat);
        let mut insert_one = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                bare.insert(1);
            }
            (iters, t.elapsed())
        };
        let value = pan(7);
        let mut tokenize_one = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(vault.tokenize(VAULTED, &value).unwrap());
            }
            (iters, t.elapsed())
        };
        measure(&mut g, rec, "insert/bare-single", 1, 20, &mut insert_one);
        measure(&mut g, rec, "vault-single", 1, 20, &mut tokenize_one);
        g.finish();
        paired(
            rec,
            "tokenize-single/vault-single",
            "tokenize (1, durable) vs insert+commit",
            "calls/s",
            "",
            30,
            (20, 20),
            &mut tokenize_one,
            &mut insert_one,
        );
    }

    {
        let mut g = group(c, "detokenize");
        let rng = RefCell::new(rand::rng());
        let max = rows;
        let random_id = || rng.borrow_mut().random_range(1..=max);
        let random_token = || tokens[rng.borrow_mut().random_range(0..tokens.len())].as_str();
        let mut read_one = |iters: u64| {
            let ids: Vec<u64> = (0..iters).map(|_| random_id()).collect();
            let t = Instant::now();
            for id in &ids {
                black_box(bare.read(std::slice::from_ref(id)));
            }
            (iters, t.elapsed())
        };
        let mut detokenize_one = |iters: u64| {
            let picks: Vec<&str> = (0..iters).map(|_| random_token()).collect();
            let t = Instant::now();
            for token in &picks {
                black_box(vault.detokenize(VAULTED, token, None).unwrap());
            }
            (iters, t.elapsed())
        };
        let n = DETOK_BATCH as u64;
        let mut read_batch = |iters: u64| {
            let ids: Vec<Vec<u64>> = (0..iters)
                .map(|_| (0..n).map(|_| random_id()).collect())
                .collect();
            let t = Instant::now();
            for batch in &ids {
                black_box(bare.read(batch));
            }
            (n * iters, t.elapsed())
        };
        let mut detokenize_batch = |iters: u64| {
            let picks: Vec<Vec<&str>> = (0..iters)
                .map(|_| (0..n).map(|_| random_token()).collect())
                .collect();
            let t = Instant::now();
            for batch in &picks {
                let out = vault.detokenize_batch(VAULTED, batch, None).unwrap();
                debug_assert!(out.iter().all(Result::is_ok));
                black_box(out);
            }
            (n * iters, t.elapsed())
        };
        measure(&mut g, rec, "read/bare-single", 1, 50, &mut read_one);
        measure(&mut g, rec, "vault-single", 1, 50, &mut detokenize_one);
        measure(&mut g, rec, "read/bare-batch-100", n, 50, &mut read_batch);
        measure(&mut g, rec, "vault-batch-100", n, 50, &mut detokenize_batch);
        g.finish();
        paired(
            rec,
            "detokenize/vault-single",
            "detokenize (1) vs point read",
            "lookups/s",
            "",
            30,
            (2000, 2000),
            &mut detokenize_one,
            &mut read_one,
        );
        paired(
            rec,
            "detokenize/vault-batch-100",
            "detokenize_batch (100) vs 100 point reads",
            "lookups/s",
            ">= 100k/s",
            30,
            (20, 20),
            &mut detokenize_batch,
            &mut read_batch,
        );
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
        let i = std::cell::Cell::new(0usize);
        let next = || {
            i.set(i.get() + 1);
            i.get() % values.len()
        };
        let mut ff1_encrypt = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                buf.copy_from_slice(&digits[next()]);
                ff1.encrypt_in_place(black_box(b"pan\x00v1"), black_box(&mut buf))
                    .unwrap();
            }
            (iters, t.elapsed())
        };
        let mut template_encrypt = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                let v = &values[next()];
                black_box(template.encrypt(&ff1, 1, black_box(v)).unwrap());
            }
            (iters, t.elapsed())
        };
        let mut vault_tokenize = |iters: u64| {
            let t = Instant::now();
            for _ in 0..iters {
                let v = &values[next()];
                black_box(vault.tokenize(FPE, black_box(v)).unwrap());
            }
            (iters, t.elapsed())
        };
        measure(&mut g, rec, "ff1-encrypt", 1, 50, &mut ff1_encrypt);
        measure(
            &mut g,
            rec,
            "template-encrypt",
            1,
            50,
            &mut template_encrypt,
        );
        measure(&mut g, rec, "vault-tokenize", 1, 50, &mut vault_tokenize);
        g.finish();
        paired(
            rec,
            "pan-fpe/template-encrypt",
            "pan Template::encrypt vs Ff1 (16 digits)",
            "values/s",
            "",
            30,
            (2048, 2048),
            &mut template_encrypt,
            &mut ff1_encrypt,
        );
        paired(
            rec,
            "pan-fpe/vault-tokenize",
            "pan Vault::tokenize (FPE) vs Ff1 (16 digits)",
            "values/s",
            "",
            30,
            (2048, 2048),
            &mut vault_tokenize,
            &mut ff1_encrypt,
        );
        paired(
            rec,
            "pan-fpe/vault-tokenize",
            "pan Vault::tokenize (FPE) vs Template::encrypt",
            "values/s",
            "",
            30,
            (2048, 2048),
            &mut vault_tokenize,
            &mut template_encrypt,
        );
    }
    drop(vault);
    drop(store);
    eprintln!("load average at the end: {}", load_average());
    summary(rec, rows);
}

/// The closing tables: criterion medians, and the interleaved same-run ratios.
fn summary(rec: &Recorder, rows: u64) {
    let spec: &[(&str, &str)] = &[
        ("tokenize/vaulted-batch", "tokenize/insert/bare"),
        ("tokenize/deterministic-batch", "tokenize/insert/bare"),
        (
            "tokenize/deterministic-batch",
            "tokenize/insert/bare+random_index",
        ),
        (
            "tokenize-single/vault-single",
            "tokenize-single/insert/bare-single",
        ),
        ("detokenize/vault-single", "detokenize/read/bare-single"),
        (
            "detokenize/vault-batch-100",
            "detokenize/read/bare-batch-100",
        ),
        ("rewrap/rewrap/run", "rewrap/update/bare"),
        ("rewrap/rewrap/run", "rewrap/update/bare+version_index"),
        ("pan-fpe/template-encrypt", "pan-fpe/ff1-encrypt"),
        ("pan-fpe/vault-tokenize", "pan-fpe/ff1-encrypt"),
    ];
    eprintln!();
    eprintln!("## criterion medians (elements/s), N = {rows}");
    eprintln!();
    eprintln!(
        "| {:<30} | {:>10} | {:<36} | {:>10} | {:>6} |",
        "vault", "rate", "baseline", "rate", "ratio"
    );
    eprintln!(
        "|{:-<32}|{:->12}|{:-<38}|{:->12}|{:->8}|",
        "", "", "", "", ""
    );
    for (ours, base) in spec {
        let (Some(a), Some(b)) = (rec.median(ours), rec.median(base)) else {
            continue;
        };
        eprintln!(
            "| {ours:<30} | {a:>10.0} | {base:<36} | {b:>10.0} | {:>6.3} |",
            a / b
        );
    }
    eprintln!();
    eprintln!("## interleaved rounds (medians), N = {rows}");
    eprintln!();
    eprintln!(
        "| {:<46} | {:>10} | {:>10} | {:>6} | {:>6} | {:<9} | {:<10} |",
        "comparison", "vault", "baseline", "ratio", "rounds", "target", "unit"
    );
    eprintln!(
        "|{:-<48}|{:->12}|{:->12}|{:->8}|{:->8}|{:-<11}|{:-<12}|",
        "", "", "", "", "", "", ""
    );
    for (label, unit, target, rounds) in rec.pairs.borrow().iter() {
        let a = median(rounds.iter().map(|r| r.0).collect());
        let b = median(rounds.iter().map(|r| r.1).collect());
        let ratio = median(rounds.iter().map(|r| r.0 / r.1).collect());
        eprintln!(
            "| {label:<46} | {a:>10.0} | {b:>10.0} | {ratio:>6.3} | {:>6} | {target:<9} | {unit:<10} |",
            rounds.len()
        );
    }
}

fn main() {
    let rec = Recorder::default();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rec);
    c.final_summary();
}
