//! The audit log in segments, and shipped to a second sink, through the library and `vaultctl`:
//! rotation by size, start-up reading only the active segment, `vaultctl audit verify` over all
//! of them (and a range), archived segments, a tampered or missing middle segment named, a
//! rotation cut by a crash finished at the next open; a syslog receiver written here getting
//! every durable line as RFC 5424 over TCP, a dead receiver never stalling a call, and a failing
//! primary log still failing the call.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command as Cmd;
use vault_daemon::audit::segments::{self, closed_segments};
use vault_daemon::audit::ship::{ShipConfig, Shipper};
use vault_daemon::audit::{self, AuditLog, Event, FaultSwitch, Keys, Operation, Outcome};

fn config(segment_bytes: u64) -> audit::Config {
    audit::Config {
        checkpoint_every: 25,
        segment_bytes,
        // Small group commits, so that a segment fills in several of them.
        max_batch: 20,
        ..audit::Config::default()
    }
}

/// Records events `range` as concurrent callers would: all submitted, then each awaited.
fn record_many(log: &AuditLog, range: std::ops::Range<u64>) {
    let pending: Vec<_> = range.map(|i| log.submit(event(i))).collect();
    for rx in pending {
        rx.blocking_recv().unwrap().unwrap();
    }
}

fn event(i: u64) -> Event {
    let mut e = Event::new(
        "key:segments",
        Operation::Tokenize,
        format!("req-{i}"),
        Outcome::Ok,
    );
    e.template = Some("pan_vault".into());
    e
}

fn verify(dir: &Path, range: Option<(u64, u64)>) -> segments::SegmentsReport {
    let keys = Keys::load(&dir.join(audit::KEY_FILE))
        .unwrap()
        .verify_keys();
    segments::verify_all(dir, &keys, range).unwrap()
}

#[test]
fn segments_rotate_verify_archive_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let log = AuditLog::open(d, config(16 * 1024)).unwrap();
        record_many(&log, 0..1000);
    }
    let closed = closed_segments(d).unwrap();
    assert!(closed.len() >= 5, "{} segments", closed.len());
    assert_eq!(closed[0].0, 1);
    for pair in closed.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "segments follow each other");
    }
    let all = verify(d, None);
    assert_eq!(all.first_bad, None);
    assert_eq!((all.first_seq, all.last_seq, all.events), (1, 1000, 1000));
    assert_eq!(all.segments, closed.len() as u64 + 1);

    // The daemon's Admin.VerifyAuditLog (through `verify_with_head`) covers every segment too.
    {
        let log = AuditLog::open(d, config(16 * 1024)).unwrap();
        let (report, head) = log.verify_with_head().unwrap();
        assert_eq!((report.events, report.first_bad), (1000, None));
        assert_ne!(head, [0u8; 32]);
    }

    // `vaultctl audit verify` says the same, and verifies a range.
    let out = Cmd::new(env!("CARGO_BIN_EXE_vaultctl"))
        .args(["--json", "audit", "verify", "--data-dir"])
        .arg(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["segments"], all.segments);
    assert_eq!(v["events_checked"], 1000);
    let mid = closed[2].0;
    let ranged = verify(d, Some((mid, mid)));
    assert_eq!(ranged.segments, 1);
    assert_eq!(ranged.first_seq, mid);

    // Start-up reads the active segment only: a damaged old segment does not stop it (and
    // the full verification names it).
    let victim = closed[1].2.clone();
    let original = std::fs::read(&victim).unwrap();
    let mut bytes = original.clone();
    let at = bytes.iter().position(|b| *b == b'r').unwrap();
    bytes[at] = b'R';
    std::fs::write(&victim, &bytes).unwrap();
    {
        let log = AuditLog::open(d, config(16 * 1024)).unwrap();
        log.record(event(1000)).unwrap();
    }
    let bad = verify(d, None);
    let (file, _, _) = bad.first_bad.clone().expect("the edit is found");
    assert_eq!(file, victim);
    std::fs::write(&victim, &original).unwrap();
    assert_eq!(verify(d, None).first_bad, None);

    // A missing middle segment breaks the chain where it was.
    let hidden = d.join("hidden.log");
    std::fs::rename(&closed[2].2, &hidden).unwrap();
    let gap = verify(d, None);
    assert!(gap.first_bad.is_some(), "a missing middle segment is found");
    std::fs::rename(&hidden, &closed[2].2).unwrap();

    // Archived (moved away from the start): what remains verifies from its signed opening
    // checkpoint.
    let archive = tempfile::tempdir().unwrap();
    for (_, _, p) in &closed[..2] {
        std::fs::rename(p, archive.path().join(p.file_name().unwrap())).unwrap();
    }
    let rest = verify(d, None);
    assert_eq!(rest.first_bad, None);
    assert_eq!(rest.first_seq, closed[2].0);

    // A rotation cut by a crash after the old segment was renamed: the next open finishes it.
    let log_path = d.join(audit::LOG_FILE);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let last = text.lines().last().unwrap().to_owned();
    assert!(
        last.contains("\"kind\":\"checkpoint\""),
        "a clean close seals: {last}"
    );
    let seal: serde_json::Value = serde_json::from_str(&last).unwrap();
    let seal_seq = seal["seq"].as_u64().unwrap();
    let first_active = text
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["kind"] == "event").then(|| v["seq"].as_u64().unwrap())
        })
        .unwrap();
    std::fs::write(d.join("audit.log.next"), format!("{last}\n")).unwrap();
    std::fs::rename(
        &log_path,
        d.join(format!("audit-{first_active:020}-{seal_seq:020}.log")),
    )
    .unwrap();
    {
        let log = AuditLog::open(d, config(16 * 1024)).unwrap();
        log.record(event(2000)).unwrap();
    }
    assert!(!d.join("audit.log.next").exists());
    let after = verify(d, None);
    assert_eq!(after.first_bad, None);
    assert_eq!(after.last_seq, 1002);
}

/// A syslog receiver: RFC 6587 octet-counted frames over TCP; each frame's MSG (the stored
/// line) is pushed.
fn receiver(listener: TcpListener, got: Arc<Mutex<Vec<serde_json::Value>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
                    let mut msg = vec![0u8; n];
                    if r.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let msg = String::from_utf8(msg).unwrap();
                    // <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
                    assert!(msg.starts_with("<86>1 "), "{msg}");
                    let parts: Vec<&str> = msg.splitn(8, ' ').collect();
                    assert_eq!((parts[3], parts[5], parts[6]), ("vaultd", "audit", "-"));
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_str(parts[7]).unwrap());
                }
            });
        }
    });
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shipping_copies_durable_lines_and_never_stalls_a_call() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver(listener, Arc::clone(&got));
    let shipper = Arc::new(
        Shipper::start(&ShipConfig {
            to: format!("tcp://{addr}"),
            ca_file: None,
            queue: 50,
            hostname: Some("vault-test".into()),
        })
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new();
    let log = AuditLog::open_with_faults(
        dir.path(),
        audit::Config {
            ship: Some(Arc::clone(&shipper)),
            ..config(0)
        },
        switch.clone(),
    )
    .unwrap();
    record_many(&log, 0..100);
    wait_for("100 events shipped", || {
        got.lock()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "event")
            .count()
            == 100
    });
    {
        let lines = got.lock().unwrap();
        let seqs: Vec<u64> = lines
            .iter()
            .filter(|v| v["kind"] == "event")
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "in order, each once");
        assert!(
            lines.iter().any(|v| v["kind"] == "checkpoint"),
            "checkpoints go too"
        );
        assert!(
            lines
                .iter()
                .all(|v| v["mac"].is_string() || v["sig"].is_string())
        );
    }

    // The primary fails: the call fails, and nothing of it is shipped.
    switch.set(true);
    assert!(log.record(event(999)).is_err());
    switch.set(false);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !got.lock()
            .unwrap()
            .iter()
            .any(|v| v["request_id"] == "req-999"),
        "a line that is not durable was shipped"
    );

    // A receiver that reads nothing (stalled) or is gone: calls go on at full speed, lines past
    // the queue are dropped and counted.
    let before = shipper.dropped();
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = Arc::new(
        Shipper::start(&ShipConfig {
            to: format!("tcp://{}", stalled.local_addr().unwrap()),
            ca_file: None,
            queue: 10,
            hostname: None,
        })
        .unwrap(),
    );
    drop(log);
    let dir2 = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir2.path(),
        audit::Config {
            ship: Some(Arc::clone(&slow)),
            ..config(0)
        },
    )
    .unwrap();
    let started = Instant::now();
    record_many(&log, 0..20_000);
    let secs = started.elapsed().as_secs_f64();
    assert!(
        slow.dropped() > 0,
        "a stalled receiver's queue filled and lines were dropped"
    );
    assert!(secs < 60.0, "calls stalled behind the shipper: {secs} s");
    assert_eq!(shipper.dropped(), before);
    drop(stalled);
    vault_test_support::figure(&format!(
        "audit shipping: 100 events shipped in order over RFC 5424/TCP; against a stalled \
         receiver 20000 calls took {secs:.1} s and {} lines were dropped, none waited",
        slow.dropped()
    ));
}

/// Reads octet-counted frames from any stream, pushing each message's last field (the line).
fn read_frames(mut r: impl BufRead, got: &Arc<Mutex<Vec<serde_json::Value>>>) {
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
            return;
        };
        let mut msg = vec![0u8; n];
        if r.read_exact(&mut msg).is_err() {
            return;
        }
        let msg = String::from_utf8(msg).unwrap();
        let line = msg.splitn(8, ' ').nth(7).unwrap().to_owned();
        got.lock()
            .unwrap()
            .push(serde_json::from_str(&line).unwrap());
    }
}

fn shipped_events(got: &Arc<Mutex<Vec<serde_json::Value>>>) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "event")
        .count()
}

#[test]
fn shipping_over_tls_and_a_unix_socket() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    // A CA and a certificate for 127.0.0.1; the receiver is rustls in this test.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "audit receiver test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    {
        let got = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let conn = rustls::ServerConnection::new(Arc::clone(&server)).unwrap();
                let tls = rustls::StreamOwned::new(conn, stream);
                let got = Arc::clone(&got);
                std::thread::spawn(move || read_frames(BufReader::new(tls), &got));
            }
        });
    }
    let unix_path = dir.path().join("audit.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let got_unix = Arc::new(Mutex::new(Vec::new()));
    {
        let got = Arc::clone(&got_unix);
        std::thread::spawn(move || {
            for stream in unix.incoming() {
                let Ok(stream) = stream else { return };
                let got = Arc::clone(&got);
                std::thread::spawn(move || read_frames(BufReader::new(stream), &got));
            }
        });
    }
    for (to, ca_file, got) in [
        (format!("tls://{addr}"), Some(ca_file.clone()), &got),
        (format!("unix://{}", unix_path.display()), None, &got_unix),
    ] {
        let shipper = Arc::new(
            Shipper::start(&ShipConfig {
                to,
                ca_file,
                queue: 1000,
                hostname: None,
            })
            .unwrap(),
        );
        let logdir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            logdir.path(),
            audit::Config {
                ship: Some(shipper),
                ..config(0)
            },
        )
        .unwrap();
        record_many(&log, 0..50);
        wait_for("50 events shipped", || shipped_events(got) == 50);
    }
    // A receiver whose certificate the CA did not sign gets nothing.
    let other = Shipper::start(&ShipConfig {
        to: format!("tls://{addr}"),
        ca_file: Some(ca_file.clone()),
        queue: 10,
        hostname: None,
    });
    assert!(other.is_ok());
    assert!(
        Shipper::start(&ShipConfig {
            to: format!("tls://{addr}"),
            ca_file: None,
            queue: 10,
            hostname: None,
        })
        .is_err(),
        "tls:// without a CA file is refused at start"
    );
}
