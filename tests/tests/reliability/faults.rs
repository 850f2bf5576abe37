//! Faults: a full disk, an audit log that cannot be written, overload, rotation and rewrap
//! under traffic, and the storage assertions at start. Daemons run in-process
//! (`vault_daemon::spawn`) with the test-only knobs of `Config.testing`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use vault_core::store::{PageLimit, Synchronous};
use vault_daemon::audit::FaultSwitch;
use vault_daemon::server::DB_FILE;
use vault_proto::v1::admin_client::AdminClient;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    GetRewrapRequest, RevealItem, RevealRequest, RewrapState, RotateKeyRequest, StartRewrapRequest,
    rotate_key_request,
};

use crate::harness::{
    Rng, SERIAL, TEMPLATE, channel, count, detokenize, dev_config, figure, health, integrity, long,
    memory_kib, percentile, req, tokenize, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(5);
const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

/// The disk fills (SQLite `max_page_count`, a test knob): tokenize answers `UNAVAILABLE`,
/// nothing half-written is left, health is NOT_SERVING, and service comes back by itself once
/// space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_unavailable_then_recovers() {
    let _serial = SERIAL.lock().await;
    let mut rng = Rng::new("full_disk_unavailable_then_recovers");
    let dir = tempfile::tempdir().unwrap();
    let limit = PageLimit::new();
    let mut cfg = dev_config(dir.path());
    cfg.testing.store_page_limit = Some(limit.clone());
    let running = vault_daemon::spawn(cfg).await.unwrap();
    let (addr, key) = (
        running.addr().to_string(),
        running.dev_api_key().unwrap().to_owned(),
    );
    let ch = channel(&addr).await.unwrap();
    let mut c = TokenizerClient::new(ch.clone());
    let mut acked: Vec<(String, String)> = Vec::new();
    let values: Vec<String> = (0..50).map(|_| rng.pan()).collect();
    let tokens = tokenize(&mut c, &key, &values, DEADLINE).await.unwrap();
    acked.extend(tokens.into_iter().zip(values));
    assert_eq!(health(ch.clone(), "").await, SERVING);

    // The disk is full: keep tokenizing until the database cannot grow.
    limit.set(1);
    let mut first_refusal = None;
    for _ in 0..10_000 {
        let values: Vec<String> = (0..100).map(|_| rng.pan()).collect();
        match tokenize(&mut c, &key, &values, DEADLINE).await {
            Ok(tokens) => acked.extend(tokens.into_iter().zip(values)),
            Err(s) => {
                first_refusal = Some(s);
                break;
            }
        }
    }
    let s = first_refusal.expect("the full disk refuses a tokenize");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(!s.message().contains("sqlite") && !s.message().contains('/'));
    let full_at = Instant::now();
    let not_serving = wait_until(Duration::from_secs(5), || {
        let ch = ch.clone();
        async move {
            health(ch.clone(), "").await == NOT_SERVING
                && health(ch, "vault.v1.Tokenizer").await == NOT_SERVING
        }
    })
    .await
    .expect("health NOT_SERVING while the disk is full");
    // Still full: more attempts are refused the same way, and stay NOT_SERVING.
    let mut refused = 1;
    for _ in 0..20 {
        let values: Vec<String> = (0..100).map(|_| rng.pan()).collect();
        let r = tokenize(&mut c, &key, &values, DEADLINE).await;
        assert_eq!(r.as_ref().err().map(|s| s.code()), Some(Code::Unavailable));
        refused += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health(ch.clone(), "").await, NOT_SERVING);
    // Nothing half-written: the rows on disk are exactly the acknowledged ones.
    let data = dir.path();
    let rows = count(data, "SELECT count(*) FROM records");
    assert_eq!(
        rows,
        acked.len() as u64,
        "rows on disk = acknowledged tokens"
    );
    assert_eq!(integrity(data), "ok");

    // Space returns: health and tokenize come back without a restart.
    limit.set(0);
    let freed_at = Instant::now();
    let recovered = wait_until(Duration::from_secs(5), || {
        let ch = ch.clone();
        async move { health(ch, "").await == SERVING }
    })
    .await
    .expect("health SERVING again once space returns");
    let values: Vec<String> = (0..10).map(|_| rng.pan()).collect();
    let tokens = tokenize(&mut c, &key, &values, DEADLINE).await.unwrap();
    acked.extend(tokens.into_iter().zip(values));
    let mut lost = 0;
    for chunk in acked.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let got = detokenize(&mut c, &key, &tokens, DEADLINE).await.unwrap();
        lost += chunk
            .iter()
            .zip(got)
            .filter(|((_, v), g)| g.as_ref().ok() != Some(v))
            .count();
    }
    figure(
        "storage_full",
        &format!(
            "acknowledged={} refused_unavailable={refused} half_written_rows={} lost={lost} \
             not_serving_after={} ms recovered_after={} ms (full for {} ms)",
            acked.len(),
            rows - (acked.len() as u64 - 10),
            not_serving.as_millis(),
            recovered.as_millis(),
            freed_at.duration_since(full_at).as_millis(),
        ),
    );
    assert_eq!(lost, 0);
    running.shutdown().await;
}

/// The audit sink cannot write: every detokenize and reveal is refused with `UNAVAILABLE` and
/// no value leaves (the calls return no results at all). Back to normal once it can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_failure_refuses_every_read() {
    let _serial = SERIAL.lock().await;
    let n = if long() { 500 } else { 50 };
    let mut rng = Rng::new("audit_failure_refuses_every_read");
    let dir = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new();
    let mut cfg = dev_config(dir.path());
    cfg.testing.audit_fault = Some(switch.clone());
    let running = vault_daemon::spawn(cfg).await.unwrap();
    let key = running.dev_api_key().unwrap().to_owned();
    let ch = channel(&running.addr().to_string()).await.unwrap();
    let mut c = TokenizerClient::new(ch);
    let values: Vec<String> = (0..n).map(|_| rng.pan()).collect();
    let tokens = tokenize(&mut c, &key, &values, DEADLINE).await.unwrap();

    switch.set(true);
    let (mut refused, mut plaintext) = (0, 0);
    for (t, v) in tokens.iter().zip(&values) {
        match detokenize(&mut c, &key, std::slice::from_ref(t), DEADLINE).await {
            Err(s) if s.code() == Code::Unavailable => {
                refused += 1;
                assert!(!s.message().contains(v.as_str()));
            }
            Err(s) => panic!("detokenize: {s:?}"),
            Ok(_) => plaintext += 1,
        }
        let reveal = RevealRequest {
            request_id: None,
            template: TEMPLATE.into(),
            key_version: None,
            purpose: "reliability test".into(),
            mask: None,
            items: vec![RevealItem { token: t.clone() }],
        };
        match c.reveal(req(reveal, &key, DEADLINE)).await {
            Err(s) if s.code() == Code::Unavailable => refused += 1,
            Err(s) => panic!("reveal: {s:?}"),
            Ok(_) => plaintext += 1,
        }
    }
    switch.set(false);
    let back = detokenize(&mut c, &key, &tokens[..1], DEADLINE)
        .await
        .unwrap();
    figure(
        "audit_failure",
        &format!(
            "refused={refused} of {} (detokenize {n}, reveal {n}) values_returned={plaintext}",
            2 * n
        ),
    );
    assert_eq!((refused, plaintext), (2 * n, 0));
    assert_eq!(back[0].as_ref().unwrap(), &values[0]);
    running.shutdown().await;
}

/// One closed-loop measurement: `clients` callers tokenizing batches of 10 for `dur`; calls
/// per second that succeeded (a shed caller waits 2 ms and tries again).
async fn closed_loop(addr: &str, key: &str, clients: usize, dur: Duration) -> f64 {
    let ch = channel(addr).await.unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (ch, done, key) = (ch.clone(), done.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x1234_5678 + w as u64);
            let mut c = TokenizerClient::new(ch);
            while start.elapsed() < dur {
                let values: Vec<String> = (0..10).map(|_| rng.pan()).collect();
                if tokenize(&mut c, &key, &values, DEADLINE).await.is_ok() {
                    done.fetch_add(1, Ordering::SeqCst);
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::SeqCst) as f64 / start.elapsed().as_secs_f64()
}

/// Overload: the capacity is measured (closed loop with four times as many callers as the
/// concurrency limit admits, so the server runs full; successful calls per second), then calls
/// arrive open-loop at twice that rate. Each call carries a 10 ms slow-call delay (test hook)
/// on top of its real work, so the capacity is set by the concurrency limit rather than by
/// the fsync latency of a shared disk, which varies too much for a stable "twice". Excess calls are shed with `RESOURCE_EXHAUSTED`,
/// admitted calls keep their p99 within the deadline, nothing else fails, and memory stays
/// bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_and_keeps_admitted_latency() {
    let _serial = SERIAL.lock().await;
    const LIMIT: usize = 8;
    const CALL_DEADLINE: Duration = Duration::from_secs(1);
    let secs = if long() { 30 } else { 4 };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev_config(dir.path());
    cfg.limits.max_concurrent_calls = LIMIT;
    cfg.testing.call_delay = Some(Duration::from_millis(10));
    let running = vault_daemon::spawn(cfg).await.unwrap();
    let (addr, key) = (
        running.addr().to_string(),
        running.dev_api_key().unwrap().to_owned(),
    );
    let pid = std::process::id().to_string();
    // Warm up, then measure.
    closed_loop(&addr, &key, 4 * LIMIT, Duration::from_millis(500)).await;
    let capacity = closed_loop(&addr, &key, 4 * LIMIT, Duration::from_secs(2)).await;
    let (rss_before, _) = memory_kib(&pid);

    let rate = 2.0 * capacity;
    let ch = channel(&addr).await.unwrap();
    let results: Arc<Mutex<Vec<(Code, Duration)>>> = Arc::default();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut owed = 0.0;
    let mut tasks = Vec::new();
    let mut rng = Rng::new("overload_sheds_and_keeps_admitted_latency");
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        owed += rate * 0.010;
        while owed >= 1.0 {
            owed -= 1.0;
            let (ch, results, key) = (ch.clone(), results.clone(), key.clone());
            let values: Vec<String> = (0..10).map(|_| rng.pan()).collect();
            tasks.push(tokio::spawn(async move {
                let mut c = TokenizerClient::new(ch);
                let t0 = Instant::now();
                let r = tokenize(&mut c, &key, &values, CALL_DEADLINE).await;
                let code = r.err().map_or(Code::Ok, |s| s.code());
                results.lock().unwrap().push((code, t0.elapsed()));
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (rss_after, hwm) = memory_kib(&pid);
    let results = std::mem::take(&mut *results.lock().unwrap());
    let mut admitted: Vec<Duration> = results
        .iter()
        .filter(|(c, _)| *c == Code::Ok)
        .map(|(_, d)| *d)
        .collect();
    admitted.sort();
    let shed = results
        .iter()
        .filter(|(c, _)| *c == Code::ResourceExhausted)
        .count();
    let other: Vec<Code> = results
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != Code::Ok && *c != Code::ResourceExhausted)
        .collect();
    let p99 = percentile(&admitted, 99.0);
    figure(
        "overload",
        &format!(
            "capacity={capacity:.0} calls/s (10 items + 10 ms each, limit {LIMIT}) offered={:.0} calls/s \
             for {secs} s: admitted={} ({:.0}/s) shed={} other={} admitted_p50={} ms \
             p99={} ms deadline={} ms; RSS {} MiB -> {} MiB (peak {} MiB, test process with \
             the daemon in it)",
            results.len() as f64 / elapsed,
            admitted.len(),
            admitted.len() as f64 / elapsed,
            shed,
            other.len(),
            percentile(&admitted, 50.0).as_millis(),
            p99.as_millis(),
            CALL_DEADLINE.as_millis(),
            rss_before / 1024,
            rss_after / 1024,
            hwm / 1024,
        ),
    );
    assert!(other.is_empty(), "only OK or RESOURCE_EXHAUSTED: {other:?}");
    assert!(shed > 0, "twice the capacity sheds something");
    assert!(p99 < CALL_DEADLINE, "admitted p99 {p99:?}");
    assert!(
        rss_after < rss_before + 256 * 1024,
        "memory bounded: {rss_before} KiB -> {rss_after} KiB"
    );
    running.shutdown().await;
}

/// Two key rotations, each followed by a rewrap, while tokenize and detokenize traffic runs:
/// zero failed requests, every token still reads back, no record under an old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_rewrap_under_load() {
    let _serial = SERIAL.lock().await;
    let mut rng = Rng::new("rotation_and_rewrap_under_load");
    let dir = tempfile::tempdir().unwrap();
    let running = vault_daemon::spawn(dev_config(dir.path())).await.unwrap();
    let (addr, key) = (
        running.addr().to_string(),
        running.dev_api_key().unwrap().to_owned(),
    );
    let ch = channel(&addr).await.unwrap();
    let mut c = TokenizerClient::new(ch.clone());
    let known: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for _ in 0..(if long() { 50 } else { 5 }) {
        let values: Vec<String> = (0..1000).map(|_| rng.pan()).collect();
        let tokens = tokenize(&mut c, &key, &values, DEADLINE).await.unwrap();
        known.lock().unwrap().extend(tokens.into_iter().zip(values));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let (ch, stop, known, calls, failed, key) = (
            ch.clone(),
            stop.clone(),
            known.clone(),
            calls.clone(),
            failed.clone(),
            key.clone(),
        );
        let mut r = Rng(rng.next() | 1 | w);
        tasks.push(tokio::spawn(async move {
            let mut c = TokenizerClient::new(ch);
            while !stop.load(Ordering::SeqCst) {
                calls.fetch_add(1, Ordering::SeqCst);
                if w < 4 {
                    let values: Vec<String> = (0..10).map(|_| r.pan()).collect();
                    match tokenize(&mut c, &key, &values, DEADLINE).await {
                        Ok(t) => known.lock().unwrap().extend(t.into_iter().zip(values)),
                        Err(s) => {
                            eprintln!("tokenize failed: {s:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                } else {
                    let sample: Vec<(String, String)> = {
                        let k = known.lock().unwrap();
                        (0..50)
                            .map(|_| k[(r.next() % k.len() as u64) as usize].clone())
                            .collect()
                    };
                    let tokens: Vec<String> = sample.iter().map(|(t, _)| t.clone()).collect();
                    match detokenize(&mut c, &key, &tokens, DEADLINE).await {
                        Ok(got) => {
                            for ((_, want), g) in sample.iter().zip(got) {
                                if g.as_ref().ok() != Some(want) {
                                    eprintln!("detokenize item failed: {g:?}");
                                    failed.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        Err(s) => {
                            eprintln!("detokenize failed: {s:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
    }

    let mut admin = AdminClient::new(ch.clone());
    let key_name = format!("data/{TEMPLATE}");
    let start = Instant::now();
    let mut versions = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rotated = admin
            .rotate_key(req(
                RotateKeyRequest {
                    key: Some(rotate_key_request::Key::KeyName(key_name.clone())),
                },
                &key,
                DEADLINE,
            ))
            .await
            .unwrap()
            .into_inner();
        versions.push(rotated.new_version);
        let job = admin
            .start_rewrap(req(
                StartRewrapRequest {
                    key_name: key_name.clone(),
                    batch_size: Some(500),
                },
                &key,
                DEADLINE,
            ))
            .await
            .unwrap()
            .into_inner();
        let done = wait_until(Duration::from_secs(60), || {
            let mut admin = admin.clone();
            let (id, key) = (job.job_id.clone(), key.clone());
            async move {
                let j = admin
                    .get_rewrap(req(GetRewrapRequest { job_id: id }, &key, DEADLINE))
                    .await
                    .unwrap()
                    .into_inner();
                assert_ne!(j.state, RewrapState::Failed as i32, "{j:?}");
                j.state == RewrapState::Succeeded as i32
            }
        })
        .await;
        assert!(done.is_some(), "rewrap finished");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let during = start.elapsed();
    let known = known.lock().unwrap().clone();
    let mut unreadable = 0;
    for chunk in known.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let got = detokenize(&mut c, &key, &tokens, DEADLINE).await.unwrap();
        unreadable += chunk
            .iter()
            .zip(got)
            .filter(|((_, v), g)| g.as_ref().ok() != Some(v))
            .count();
    }
    let last = *versions.last().unwrap();
    let old = count(
        dir.path(),
        &format!("SELECT count(*) FROM records WHERE key_version < {last}"),
    );
    figure(
        "rotation_under_load",
        &format!(
            "rotations=2 rewraps=2 (versions {versions:?}) requests={} failed={} \
             tokens={} unreadable={unreadable} left_under_old_versions={old} ({:.1} s)",
            calls.load(Ordering::SeqCst),
            failed.load(Ordering::SeqCst),
            known.len(),
            during.as_secs_f64()
        ),
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert_eq!((unreadable, old), (0, 0));
    running.shutdown().await;
}

/// The daemon's database runs in WAL with the configured `synchronous`: the file header says
/// WAL, and the store refuses any connection whose pragmas read back otherwise (unit tests
/// `pragma_read_back_mismatch_refuses` in vault-core and `pragma_failure_names_the_cause` in
/// the daemon cover the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_runs_in_wal_with_the_configured_sync() {
    let _serial = SERIAL.lock().await;
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = dev_config(dir.path());
        cfg.synchronous = sync;
        let running = vault_daemon::spawn(cfg).await.unwrap();
        let head = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        // Bytes 18 and 19 of the header: file format write/read versions, 2 = WAL.
        assert_eq!((head[18], head[19]), (2, 2), "{sync:?}");
        let mode: String = rusqlite::Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        running.shutdown().await;
    }
}

/// A real full filesystem, where the platform lets the test mount one (a 16 MiB tmpfs; root
/// in a container that allows `mount`; skipped with a note otherwise): a filler file takes the
/// last bytes, tokenize answers `UNAVAILABLE`, health is NOT_SERVING, the rows on disk are the
/// acknowledged ones, and once the filler is deleted service comes back by itself with the
/// audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_filesystem_unavailable_then_recovers() {
    let _serial = SERIAL.lock().await;
    let mut rng = Rng::new("full_filesystem_unavailable_then_recovers");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        figure(
            "storage_full_fs",
            "skipped: mounting a tmpfs is not permitted here",
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let running = vault_daemon::spawn(dev_config(&data)).await.unwrap();
    let (addr, key) = (
        running.addr().to_string(),
        running.dev_api_key().unwrap().to_owned(),
    );
    let ch = channel(&addr).await.unwrap();
    let mut c = TokenizerClient::new(ch.clone());
    let mut acked: Vec<(String, String)> = Vec::new();
    let values: Vec<String> = (0..50).map(|_| rng.pan()).collect();
    let tokens = tokenize(&mut c, &key, &values, DEADLINE).await.unwrap();
    acked.extend(tokens.into_iter().zip(values));

    // Fill the filesystem.
    let filler = mnt.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for _ in 0..1000 {
        let values: Vec<String> = (0..100).map(|_| rng.pan()).collect();
        match tokenize(&mut c, &key, &values, DEADLINE).await {
            Ok(tokens) => acked.extend(tokens.into_iter().zip(values)),
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let s = refused.expect("a full filesystem refuses a tokenize");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let not_serving = wait_until(Duration::from_secs(5), || {
        let ch = ch.clone();
        async move { health(ch, "").await == NOT_SERVING }
    })
    .await;
    let rows = count(&data, "SELECT count(*) FROM records");

    std::fs::remove_file(&filler).unwrap();
    let recovered = wait_until(Duration::from_secs(10), || {
        let ch = ch.clone();
        async move { health(ch, "").await == SERVING }
    })
    .await;
    let after = tokenize(&mut c, &key, &[rng.pan()], DEADLINE).await;
    let mut lost = 0;
    for chunk in acked.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let got = detokenize(&mut c, &key, &tokens, DEADLINE).await.unwrap();
        lost += chunk
            .iter()
            .zip(got)
            .filter(|((_, v), g)| g.as_ref().ok() != Some(v))
            .count();
    }
    let verify = AdminClient::new(ch.clone())
        .verify_audit_log(req(
            vault_proto::v1::VerifyAuditLogRequest::default(),
            &key,
            DEADLINE,
        ))
        .await
        .map(|r| r.into_inner().ok);
    figure(
        "storage_full_fs",
        &format!(
            "tmpfs 16 MiB: acknowledged={} first_refusal={:?} rows_on_disk={rows} lost={lost} \
             not_serving_after={:?} recovered_after={:?} tokenize_after={} audit_chain_ok={:?} \
             integrity_check={}",
            acked.len(),
            s.code(),
            not_serving.map(|d| d.as_millis()),
            recovered.map(|d| d.as_millis()),
            after.is_ok(),
            verify,
            integrity(&data),
        ),
    );
    assert!(not_serving.is_some(), "NOT_SERVING while full");
    assert_eq!(
        rows,
        acked.len() as u64,
        "rows on disk = acknowledged tokens"
    );
    assert!(recovered.is_some(), "SERVING again once space returns");
    assert!(after.is_ok(), "{after:?}");
    assert_eq!(lost, 0);
    assert_eq!(verify.ok(), Some(true));
    running.shutdown().await;
}
