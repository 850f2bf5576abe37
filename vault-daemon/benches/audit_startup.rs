//! Start-up time of the audit log with a long history, one file against segments, and the rate
//! `vaultctl audit verify` checks a whole history at, in one run on this machine.
//!
//! ```text
//! cargo bench -p vault-daemon --bench audit_startup            # 10,000,000 events each
//! VAULT_BENCH_EVENTS=1000000 cargo bench -p vault-daemon --bench audit_startup
//! ```
//!
//! Writes two histories (about 3 GB each at 10M events) under `VAULT_BENCH_DIR` (default the
//! system temporary directory) and removes them. Events are submitted as many concurrent callers
//! would (group commits of up to 4096), the writer's own path: chained MACs, checkpoints every
//! 1000 events, fsync per batch.

use std::path::Path;
use std::time::Instant;

use vault_daemon::audit::{self, AuditLog, Event, Keys, Operation, Outcome};

fn event(i: u64) -> Event {
    let mut e = Event::new(
        "key:checkout",
        Operation::Tokenize,
        format!("req-{i:012}"),
        Outcome::Ok,
    );
    e.template = Some("pan_vault".into());
    e.key_versions = vec![1];
    e.token_refs = vec![format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))];
    e
}

fn fill(dir: &Path, cfg: audit::Config, n: u64) -> f64 {
    let log = AuditLog::open(dir, cfg).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 50_000).min(n);
        let pending: Vec<_> = (i..end).map(|k| log.submit(event(k))).collect();
        for rx in pending {
            rx.blocking_recv().unwrap().unwrap();
        }
        i = end;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(log);
    secs
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn open_secs(dir: &Path, cfg: audit::Config) -> f64 {
    let started = Instant::now();
    let log = AuditLog::open(dir, cfg).unwrap();
    let secs = started.elapsed().as_secs_f64();
    drop(log);
    secs
}

#[allow(clippy::print_stdout, reason = "a benchmark's report")]
fn main() {
    let n: u64 = std::env::var("VAULT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let base = std::env::var_os("VAULT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let one = tempfile::tempdir_in(&base).unwrap();
    let seg = tempfile::tempdir_in(&base).unwrap();
    let single = audit::Config {
        segment_bytes: 0,
        ..audit::Config::default()
    };
    let segmented = audit::Config::default();

    let fill_one = fill(one.path(), single.clone(), n);
    let open_one = open_secs(one.path(), single);
    let bytes_one = size(one.path());
    println!(
        "one file:  {n} events, {:.2} GB written in {fill_one:.1} s ({:.0} events/s); start-up {open_one:.2} s",
        bytes_one as f64 / 1e9,
        n as f64 / fill_one
    );
    drop(one);

    let fill_seg = fill(seg.path(), segmented.clone(), n);
    let open_seg = open_secs(seg.path(), segmented);
    let segments = audit::segments::closed_segments(seg.path()).unwrap().len() + 1;
    println!(
        "segments:  {n} events in {segments} segments of {} MiB, written in {fill_seg:.1} s; start-up {open_seg:.3} s",
        audit::DEFAULT_SEGMENT_BYTES >> 20
    );
    let keys = Keys::load(&seg.path().join(audit::KEY_FILE))
        .unwrap()
        .verify_keys();
    let started = Instant::now();
    let report = audit::segments::verify_all(seg.path(), &keys, None).unwrap();
    let verify = started.elapsed().as_secs_f64();
    assert!(report.first_bad.is_none());
    assert_eq!(report.events, n);
    println!(
        "verify all: {} events in {} segments in {verify:.1} s = {:.0} events/s (MACs and signatures)",
        report.events,
        report.segments,
        report.events as f64 / verify
    );
    println!(
        "start-up with segments / one file = {:.4} ({:.1}x faster)",
        open_seg / open_one,
        open_one / open_seg
    );
}
