//! Unit tests of `audit`.

use std::fs::File;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::*;

fn config() -> Config {
    Config {
        checkpoint_every: 4,
        checkpoint_interval: Duration::from_secs(3600),
        max_batch: 4096,
        ..Config::default()
    }
}

fn event(i: u32) -> Event {
    let mut e = Event::new(
        "spiffe://prod/checkout",
        Operation::Tokenize,
        format!("req-{i}"),
        Outcome::Ok,
    );
    e.template = Some("pan".into());
    e.key_versions = vec![1];
    e
}

/// A log with `n` events, closed (so a final checkpoint is written).
fn log_with(n: u32, config: Config) -> (tempfile::TempDir, PathBuf, VerifyKeys) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), config).unwrap();
    for i in 1..=n {
        assert_eq!(log.record(event(i)).unwrap().seq, u64::from(i));
    }
    let keys = log.keys.verify_keys();
    let path = log.path().to_owned();
    drop(log);
    (dir, path, keys)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Index of the line holding event `seq`.
fn line_of(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(&format!("{{\"kind\":\"event\",\"seq\":{seq},")))
        .unwrap()
}

#[test]
fn chain_verifies_and_reopens() {
    let (dir, path, keys) = log_with(10, config());
    let report = verify(&path, &keys).unwrap();
    assert_eq!(report.first_bad, None);
    assert_eq!(report.events, 10);
    // Checkpoints at 4, 8 and the final one at 10 on close.
    assert_eq!(report.checkpoints, 3);
    assert!(report.macs_checked);

    // The writer resumes the chain after a restart.
    let log = AuditLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.record(event(11)).unwrap().seq, 11);
    drop(log);
    assert_eq!(verify(&path, &keys).unwrap().first_bad, None);

    // An auditor with the public key only.
    let public = VerifyKeys::public_only(keys.public);
    let report = verify(&path, &public).unwrap();
    assert_eq!(
        (report.first_bad, report.macs_checked, report.events),
        (None, false, 11)
    );
}

#[test]
fn interval_checkpoints_and_checkpoint_file() {
    // A zero interval makes every commit due, exercising the time-based path without sleeping.
    let cfg = Config {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::ZERO,
        max_batch: 4096,
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), cfg).unwrap();
    for i in 1..=3 {
        log.record(event(i)).unwrap();
    }
    assert_eq!(log.stats().checkpoints, 3);
    let cp: chain::Line = serde_json::from_str(
        fs::read_to_string(dir.path().join(CHECKPOINT_FILE))
            .unwrap()
            .trim_end(),
    )
    .unwrap();
    assert!(matches!(
        cp,
        chain::Line::Checkpoint(Checkpoint { seq: 3, .. })
    ));
    assert_eq!(log.verify().unwrap().first_bad, None);
}

#[test]
fn edited_field_is_detected_at_its_seq() {
    let (_dir, path, keys) = log_with(10, config());
    let mut l = lines(&path);
    let i = line_of(&l, 6);
    l[i] = l[i].replace("req-6", "req-X");
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((6, Defect::Mac))
    );
    // A JSON-equivalent but different encoding is caught as well.
    let mut l = lines(&path);
    l[i] = l[i].replace("req-X", "req-6").replacen(':', ": ", 1);
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((6, Defect::NonCanonical))
    );
}

#[test]
fn deleted_event_is_detected() {
    let (_dir, path, keys) = log_with(10, config());
    let mut l = lines(&path);
    l.remove(line_of(&l, 3));
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((3, Defect::Sequence { found: 4 }))
    );
}

#[test]
fn renumbered_deletion_is_detected() {
    // Deleting an event and renumbering the rest keeps the sequence but breaks the chain.
    let (_dir, path, keys) = log_with(
        3,
        Config {
            checkpoint_every: 100,
            ..config()
        },
    );
    let mut l = lines(&path);
    l.remove(line_of(&l, 2));
    let i = line_of(&l, 3);
    l[i] = l[i].replace("\"seq\":3", "\"seq\":2");
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((2, Defect::BrokenLink))
    );
}

#[test]
fn reordered_events_are_detected() {
    let (_dir, path, keys) = log_with(10, config());
    let mut l = lines(&path);
    let (a, b) = (line_of(&l, 5), line_of(&l, 6));
    l.swap(a, b);
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((5, Defect::Sequence { found: 6 }))
    );
}

#[test]
fn truncated_tail_is_detected_via_checkpoint_file() {
    let (dir, path, keys) = log_with(10, config());
    // Cut the log after event 5: the last checkpoints (8, 10) are gone with it, but the
    // checkpoint file still commits to 10.
    let mut l = lines(&path);
    l.truncate(line_of(&l, 5) + 1);
    write_lines(&path, &l);
    let report = verify(&path, &keys).unwrap();
    assert_eq!(
        report.first_bad,
        Some((6, Defect::Truncated { checkpoint_seq: 10 }))
    );
    // The writer refuses to append to it.
    assert!(matches!(
        AuditLog::open(dir.path(), config()),
        Err(AuditError::Corrupt { seq: 6, .. })
    ));
    // Deleting the checkpoint file as well is detected too (the log still has checkpoint 4).
    fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((4, Defect::CheckpointFileMissing))
    );
}

#[test]
fn forged_checkpoint_is_detected() {
    let (_dir, path, keys) = log_with(
        4,
        Config {
            checkpoint_every: 100,
            ..config()
        },
    );
    let mut l = lines(&path);
    let last = l.len() - 1;
    assert!(l[last].contains("\"kind\":\"checkpoint\""));
    l[last] = l[last].replace("\"time_ms\":", "\"time_ms\":1");
    write_lines(&path, &l);
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((4, Defect::CheckpointSignature))
    );
}

#[test]
fn torn_last_line_is_set_aside_at_open_and_recorded() {
    let (dir, path, keys) = log_with(
        5,
        Config {
            checkpoint_every: 100,
            ..config()
        },
    );
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"event\",\"seq\":6,\"ti");
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        verify(&path, &keys).unwrap().first_bad,
        Some((6, Defect::TornLine))
    );
    // Opening sets the 27 torn bytes aside and records the recovery as event 6.
    let log = AuditLog::open(dir.path(), config()).unwrap();
    let torn = log.recovered_tail().unwrap().clone();
    assert_eq!(torn.bytes, 27);
    assert_eq!(
        fs::read(&torn.quarantine).unwrap(),
        b"{\"kind\":\"event\",\"seq\":6,\"ti"
    );
    assert_eq!(log.record(event(7)).unwrap().seq, 7);
    drop(log);
    assert_eq!(verify(&path, &keys).unwrap().first_bad, None);
    let recovery = query(
        &path,
        &Filter {
            action: Some(TORN_TAIL_ACTION.into()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert_eq!(recovery.len(), 1);
    assert_eq!(recovery[0].seq, 6);
    assert!(
        recovery[0]
            .event
            .detail
            .as_deref()
            .unwrap()
            .contains(&torn.sha256)
    );
    // Nothing torn now: the repair tool has nothing to do.
    assert!(matches!(
        repair_torn_tail(&path, &keys),
        Err(AuditError::NotRepairable)
    ));

    // Any other defect is not the repair tool's business.
    let mut l = lines(&path);
    l.remove(line_of(&l, 2));
    write_lines(&path, &l);
    assert!(matches!(
        repair_torn_tail(&path, &keys),
        Err(AuditError::NotRepairable)
    ));
}

/// A sink that fails on demand and counts fsyncs.
#[derive(Default)]
struct Flaky {
    data: Arc<Mutex<Vec<u8>>>,
    fail_write: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
    published: Arc<Mutex<Option<Checkpoint>>>,
}

impl Sink for Flaky {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut data = self.data.lock().unwrap();
        if self.fail_write.load(Ordering::SeqCst) {
            // A partial write, then the error: what ENOSPC looks like.
            data.extend_from_slice(&bytes[..bytes.len() / 2]);
            return Err(io::Error::other("disk full"));
        }
        data.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            Err(io::Error::other("EIO"))
        } else {
            Ok(())
        }
    }
    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn rollback(&mut self, len: u64) -> io::Result<()> {
        self.data.lock().unwrap().truncate(len as usize);
        Ok(())
    }
    fn publish(&mut self, cp: &Checkpoint) -> io::Result<()> {
        *self.published.lock().unwrap() = Some(cp.clone());
        Ok(())
    }
}

fn flaky_log(dir: &Path) -> (AuditLog, Flaky) {
    let sink = Flaky::default();
    let handles = Flaky {
        data: sink.data.clone(),
        fail_write: sink.fail_write.clone(),
        fail_sync: sink.fail_sync.clone(),
        syncs: sink.syncs.clone(),
        published: sink.published.clone(),
    };
    let keys = Keys::load_or_create(&dir.join(KEY_FILE)).unwrap();
    let log = AuditLog::start(dir.join(LOG_FILE), keys, Box::new(sink), config()).unwrap();
    (log, handles)
}

#[test]
fn failed_write_is_unavailable_and_leaves_no_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sink) = flaky_log(dir.path());
    log.record(event(1)).unwrap();
    sink.fail_write.store(true, Ordering::SeqCst);
    assert!(matches!(log.record(event(2)), Err(AuditError::Unavailable)));
    sink.fail_write.store(false, Ordering::SeqCst);
    // Rolled back: the chain continues from event 1.
    assert_eq!(log.record(event(3)).unwrap().seq, 2);
    let keys = log.keys.verify_keys();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    fs::write(&path, &*sink.data.lock().unwrap()).unwrap();
    let cp = sink.published.lock().unwrap().clone().unwrap();
    fs::write(
        dir.path().join(CHECKPOINT_FILE),
        chain::Line::Checkpoint(cp).to_json(),
    )
    .unwrap();
    let report = verify(&path, &keys).unwrap();
    assert_eq!((report.first_bad, report.events), (None, 2));
}

#[test]
fn failed_fsync_poisons_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sink) = flaky_log(dir.path());
    log.record(event(1)).unwrap();
    sink.fail_sync.store(true, Ordering::SeqCst);
    assert!(matches!(log.record(event(2)), Err(AuditError::Unavailable)));
    sink.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(log.record(event(3)), Err(AuditError::Unavailable)));
    assert_eq!(sink.syncs.load(Ordering::SeqCst), 2);
}

#[test]
fn unwritable_log_path_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(LOG_FILE)).unwrap();
    assert!(AuditLog::open(dir.path(), config()).is_err());
}

#[cfg(unix)]
#[test]
fn read_only_log_file_makes_record_unavailable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), config()).unwrap();
    log.record(event(1)).unwrap();
    // Swap the file under the writer for a directory: the writer's handle still works, so
    // instead make a fresh log on a file that cannot be written through a read-only fd.
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let ro = File::open(&path).unwrap();
    let keys = Keys::load(&dir.path().join(KEY_FILE)).unwrap();
    let sink = FileSink::for_test(ro, &path, &dir.path().join(CHECKPOINT_FILE));
    let log = AuditLog::start(path.clone(), keys, Box::new(sink), config()).unwrap();
    assert!(matches!(log.record(event(2)), Err(AuditError::Unavailable)));
    drop(log);
    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
}

#[test]
fn concurrent_recording_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        Config {
            checkpoint_every: 50,
            ..config()
        },
    )
    .unwrap();
    let per_thread = 40;
    std::thread::scope(|s| {
        for t in 0..16 {
            let log = &log;
            s.spawn(move || {
                for i in 0..per_thread {
                    log.record(event(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    let stats = log.stats();
    assert_eq!(stats.events, 16 * u64::from(per_thread));
    assert!(stats.fsyncs < stats.events, "{stats:?}");
    let keys = log.keys.verify_keys();
    let path = log.path().to_owned();
    drop(log);
    let report = verify(&path, &keys).unwrap();
    assert_eq!((report.first_bad, report.events), (None, 640));
}

#[test]
fn async_entry_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), config()).unwrap();
    let rx = log.submit(event(1));
    assert_eq!(rx.blocking_recv().unwrap().unwrap().seq, 1);
    // `record_async` is the same receiver awaited; poll it to completion without a runtime.
    let receipt = block_on(log.record_async(event(2))).unwrap();
    assert_eq!(receipt.seq, 2);
}

fn block_on<F: Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn no_event_contains_a_raw_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), config()).unwrap();
    let tokens = ["tok_4111111111111111", "tok_secretvalue42"];
    let mut e = event(1);
    e.operation = Operation::Detokenize;
    e.purpose = Some("chargeback".into());
    e.token_refs = tokens.iter().map(|t| log.token_ref(t)).collect();
    log.record(e).unwrap();
    let refs: Vec<String> = tokens.iter().map(|t| log.token_ref(t)).collect();
    assert_ne!(refs[0], refs[1]);
    assert_eq!(refs[0].len(), 32);
    let path = log.path().to_owned();
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    for (t, r) in tokens.iter().zip(&refs) {
        assert!(!text.contains(t));
        assert!(!text.contains(&t[4..]));
        assert!(text.contains(r.as_str()));
    }
}

#[test]
fn query_tail_export() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), config()).unwrap();
    for i in 1..=6 {
        let mut e = event(i);
        if i % 2 == 0 {
            e.caller = "key:support".into();
            e.operation = Operation::Reveal;
        }
        log.record(e).unwrap();
    }
    let support = Filter {
        caller: Some("key:support".into()),
        ..Filter::default()
    };
    let seqs = |rs: Vec<Record>| rs.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.query(&support).unwrap()), [2, 4, 6]);
    let page = Filter {
        offset: 1,
        limit: Some(1),
        ..support.clone()
    };
    assert_eq!(seqs(log.query(&page).unwrap()), [4]);
    let reveals = Filter {
        operation: Some(Operation::Reveal),
        ..Filter::default()
    };
    assert_eq!(seqs(log.query(&reveals).unwrap()), [2, 4, 6]);
    let now = now_ms();
    assert!(
        log.query(&Filter {
            since_ms: Some(now + 60_000),
            ..Filter::default()
        })
        .unwrap()
        .is_empty()
    );
    assert_eq!(
        log.query(&Filter {
            until_ms: Some(now + 60_000),
            ..Filter::default()
        })
        .unwrap()
        .len(),
        6
    );
    assert_eq!(seqs(log.tail(2).unwrap()), [5, 6]);
    assert!(log.tail(0).unwrap().is_empty());
    let mut out = Vec::new();
    assert_eq!(export(log.path(), &support, &mut out).unwrap(), 3);
    let exported: Vec<Record> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str::<chain::Line>(l).unwrap() {
            chain::Line::Event(r) => r,
            chain::Line::Checkpoint(_) => panic!("checkpoint exported"),
        })
        .collect();
    assert_eq!(seqs(exported), [2, 4, 6]);
}
