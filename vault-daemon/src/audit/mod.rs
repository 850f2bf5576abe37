//! A tamper-evident, fail-closed audit log.
//!
//! Every call the daemon serves (tokenize, detokenize, reveal, delete, admin, and every denial)
//! is recorded as one JSON line in `audit.log` before the call's result is returned. Nothing
//! sensitive is written: no plaintext values, and tokens only as keyed references
//! ([`AuditLog::token_ref`]).
//!
//! Integrity (see `chain.rs`): events form an HMAC-SHA256 chain, so an edited, deleted or
//! reordered event is found by [`verify`] at its sequence number. Every `checkpoint_every` events
//! and every `checkpoint_interval` the writer appends a checkpoint signed with Ed25519 that commits
//! to (sequence number, chain head, time) and also atomically replaces `audit.checkpoint` with it.
//! Truncating the log below the latest checkpoint is caught by comparing with that file. Events
//! written after the latest checkpoint can be cut off undetected: the window is bounded by the
//! two checkpoint settings.
//!
//! Keys (see `keys.rs`) live in `audit.key` (0600), independent of the vault's root key, so the log
//! works while the vault is sealed. Whoever can read the key file can forge the chain.
//!
//! Durability: [`AuditLog::record`] returns only after the event is written and fsynced. One writer
//! thread does group commit: everything queued while it was busy is written with one `write` and
//! one `fsync`, and each caller gets its own result. If the write or the fsync fails every waiting
//! caller gets [`AuditError::Unavailable`]. A failed write is rolled back (truncated to the last
//! good length) so no half line is left; a failed fsync or rollback poisons the writer (every later
//! call is `Unavailable`) because the file's state is then unknown — restart to reopen. At open the
//! whole log is verified. A torn final line (a crash or power loss during an append) is an event
//! nobody was answered for, since answers wait for the fsync: the log sets its bytes aside in
//! `audit.log.torn-<ms>`, truncates to the last complete line, appends a chained event recording
//! the recovery (bytes, SHA-256, quarantine file; action [`TORN_TAIL_ACTION`]) and opens
//! ([`AuditLog::recovered_tail`] tells the daemon, which logs it loudly). Anything else wrong (an
//! edited, missing or reordered event, a log cut below its checkpoint) refuses to open
//! ([`AuditError::Corrupt`]) until an operator acts: inspect with `vaultctl audit verify`, then
//! move the log aside to start a new one.

mod chain;
mod keys;
mod read;
mod writer;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use self::chain::{Checkpoint, Record};
pub use self::keys::{Keys, PublicKey, VerifyKeys};
pub use self::read::{
    Defect, Filter, TORN_TAIL_ACTION, TornTail, VerifyReport, export, query, recover_torn_tail,
    repair_torn_tail, tail, verify,
};
pub use crate::policy::Operation;

use self::writer::{Counters, FileSink, Job, Sink};

/// File names inside the data directory.
pub const LOG_FILE: &str = "audit.log";
/// The latest checkpoint, atomically replaced.
pub const CHECKPOINT_FILE: &str = "audit.checkpoint";
/// MAC key and checkpoint signing seed (0600).
pub const KEY_FILE: &str = "audit.key";

/// What happened, as the server describes it. Holds no plaintext values and no raw tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Authenticated caller identity (`spiffe://…`, `cn:…`, `key:…`), or what was presented when
    /// authentication failed.
    pub caller: String,
    /// The operation attempted.
    pub operation: Operation,
    /// Admin sub-action (`keys.rotate`, `audit.query`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Number of items in the request (1 for a single call).
    pub items: u32,
    /// Declared purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Result.
    pub outcome: Outcome,
    /// Request id (client-supplied or generated), to join with service logs.
    pub request_id: String,
    /// Verified end-user subject, when the caller forwarded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Key versions used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_versions: Vec<u32>,
    /// Keyed references of the tokens involved ([`AuditLog::token_ref`]), never raw tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_refs: Vec<String>,
    /// What the server adds for an operator (a torn-tail recovery: bytes, digest, file). Never
    /// a value or a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event with one item and the optional fields empty.
    pub fn new(
        caller: impl Into<String>,
        operation: Operation,
        request_id: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Event {
            caller: caller.into(),
            operation,
            action: None,
            template: None,
            items: 1,
            purpose: None,
            outcome,
            request_id: request_id.into(),
            subject: None,
            key_versions: Vec::new(),
            token_refs: Vec::new(),
            detail: None,
        }
    }
}

/// The result of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// Every item succeeded.
    Ok,
    /// A batch where some items failed.
    Partial {
        /// Number of failed items.
        failed: u32,
    },
    /// Refused by policy or because the vault is sealed; the reason names the missing scope or
    /// condition, nothing sensitive.
    Denied {
        /// Why.
        reason: String,
    },
    /// Failed for another reason (the error code, not its message).
    Failed {
        /// Error code.
        code: String,
    },
    /// A follow-up to the event before it with the same request id: what that event recorded
    /// may not have reached the caller (it went away, or reset the stream, while the event was
    /// being written), so what the caller saw is not known.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Proof that an event is durably in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence number.
    pub seq: u64,
    /// Its chain MAC (hex).
    pub mac: String,
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Checkpoint after this many events.
    pub checkpoint_every: u64,
    /// Checkpoint at least this often while events arrive.
    pub checkpoint_interval: Duration,
    /// Most events written by one group commit.
    pub max_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            max_batch: 4096,
        }
    }
}

/// Writer counters (for metrics, and to show group commit at work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events written.
    pub events: u64,
    /// Group commits (write + fsync).
    pub fsyncs: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// Audit failures. `Unavailable` is what callers see on the hot path: the server maps it to
/// `UNAVAILABLE` and does not return the call's result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event could not be durably written; the call must fail.
    #[error("audit log unavailable")]
    Unavailable,
    /// The existing log does not verify; the writer refuses to append until an operator acts.
    #[error("audit log is corrupt at sequence number {seq}: {defect}; refusing to append")]
    Corrupt {
        /// First bad sequence number.
        seq: u64,
        /// What is wrong.
        defect: Defect,
    },
    /// The key file is unusable.
    #[error("audit key file {}: {reason}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never key bytes).
        reason: String,
    },
    /// A public key that is not 32 bytes of hex.
    #[error("not an audit public key")]
    PublicKey,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// `repair_torn_tail` was asked to repair a log whose defect is not a torn final line.
    #[error("refusing to repair: the log's defect is not a torn final line")]
    NotRepairable,
    /// I/O outside the hot path (open, read, verify).
    #[error("audit i/o on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl AuditError {
    fn io(path: &Path, source: io::Error) -> Self {
        AuditError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The audit log of one daemon: a handle to the writer thread plus readers.
pub struct AuditLog {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    log_path: PathBuf,
    keys: Arc<Keys>,
    counters: Arc<Counters>,
    recovered: Option<TornTail>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("log_path", &self.log_path)
            .finish_non_exhaustive()
    }
}

/// A switch that makes every append of the audit writer fail while it is on, as a full disk
/// would. For end-to-end tests of the fail-closed path (root ignores file permissions, so a
/// read-only file cannot simulate it); a production daemon never builds one.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    /// A switch, off.
    pub fn new() -> Self {
        FaultSwitch::default()
    }

    /// Turn failures on or off.
    pub fn set(&self, failing: bool) {
        self.0.store(failing, Ordering::SeqCst);
    }

    fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A sink whose appends fail while its switch is on (nothing is written, as with ENOSPC before
/// any byte lands), so the writer rolls back and stays usable once the switch is off.
struct Faulty {
    inner: Box<dyn Sink>,
    switch: FaultSwitch,
}

impl Sink for Faulty {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.switch.is_on() {
            return Err(io::Error::other("injected audit failure"));
        }
        self.inner.append(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn rollback(&mut self, len: u64) -> io::Result<()> {
        self.inner.rollback(len)
    }
    fn publish(&mut self, checkpoint: &Checkpoint) -> io::Result<()> {
        self.inner.publish(checkpoint)
    }
}

impl AuditLog {
    /// Open (or create) the log in `dir`: load or create `audit.key`, verify the existing log,
    /// and start the writer thread.
    pub fn open(dir: &Path, config: Config) -> Result<Self, AuditError> {
        AuditLog::open_with(dir, config, None)
    }

    /// [`AuditLog::open`] with an injected-failure switch (tests of the fail-closed path).
    pub fn open_with_faults(
        dir: &Path,
        config: Config,
        switch: FaultSwitch,
    ) -> Result<Self, AuditError> {
        AuditLog::open_with(dir, config, Some(switch))
    }

    fn open_with(
        dir: &Path,
        config: Config,
        switch: Option<FaultSwitch>,
    ) -> Result<Self, AuditError> {
        fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        let keys = Keys::load_or_create(&dir.join(KEY_FILE))?;
        let log_path = dir.join(LOG_FILE);
        // Before the sink opens (it takes the file's length): a torn final line is set aside.
        let (report, recovered) = read::scan_recovering(&log_path, &keys.verify_keys())?;
        let sink: Box<dyn Sink> = Box::new(FileSink::open(&log_path, &dir.join(CHECKPOINT_FILE))?);
        let sink = match switch {
            Some(switch) => Box::new(Faulty {
                inner: sink,
                switch,
            }),
            None => sink,
        };
        let mut log = AuditLog::start_scanned(log_path, keys, sink, config, &report)?;
        if let Some(torn) = recovered {
            log.record_recovery(&torn)?;
            log.recovered = Some(torn);
        }
        Ok(log)
    }

    /// Appends the chained event that records a torn-tail recovery, and waits until it is
    /// durable. The wait runs on a scoped plain thread, so that opening the log from async code
    /// does not block inside the runtime's context.
    fn record_recovery(&self, torn: &TornTail) -> Result<(), AuditError> {
        let mut event = Event::new(
            "vaultd",
            Operation::Admin,
            format!("audit-recovery-{}", now_ms()),
            Outcome::Ok,
        );
        event.action = Some(TORN_TAIL_ACTION.to_owned());
        event.detail = Some(format!("torn final line set aside: {torn}"));
        let rx = self.submit(event);
        std::thread::scope(|s| {
            s.spawn(|| rx.blocking_recv().unwrap_or(Err(AuditError::Unavailable)))
                .join()
                .unwrap_or(Err(AuditError::Unavailable))
        })
        .map(|_| ())
    }

    /// The torn final line set aside when this log was opened, if there was one.
    pub fn recovered_tail(&self) -> Option<&TornTail> {
        self.recovered.as_ref()
    }

    /// Start on a sink of the test's own, scanning the log first.
    #[cfg(test)]
    fn start(
        log_path: PathBuf,
        keys: Keys,
        sink: Box<dyn Sink>,
        config: Config,
    ) -> Result<Self, AuditError> {
        let report = read::scan(&log_path, &keys.verify_keys())?;
        AuditLog::start_scanned(log_path, keys, sink, config, &report)
    }

    /// [`AuditLog::start`] on a log already scanned (by the caller, in the same open).
    fn start_scanned(
        log_path: PathBuf,
        keys: Keys,
        sink: Box<dyn Sink>,
        config: Config,
        report: &read::ScanReport,
    ) -> Result<Self, AuditError> {
        let keys = Arc::new(keys);
        if let Some((seq, defect)) = report.first_bad.clone() {
            return Err(AuditError::Corrupt { seq, defect });
        }
        let state = writer::State::resume(report);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let thread = writer::spawn(
            rx,
            sink,
            Arc::clone(&keys),
            state,
            config,
            Arc::clone(&counters),
        )
        .map_err(|e| AuditError::io(&log_path, e))?;
        Ok(AuditLog {
            tx: Some(tx),
            thread: Some(thread),
            log_path,
            keys,
            counters,
            recovered: None,
        })
    }

    /// Record an event; returns once it is durably written. Blocks: from async code use
    /// [`AuditLog::record_async`] (calling this inside a tokio runtime panics).
    pub fn record(&self, event: Event) -> Result<Receipt, AuditError> {
        self.submit(event)
            .blocking_recv()
            .unwrap_or(Err(AuditError::Unavailable))
    }

    /// Record an event from async code.
    pub async fn record_async(&self, event: Event) -> Result<Receipt, AuditError> {
        self.submit(event)
            .await
            .unwrap_or(Err(AuditError::Unavailable))
    }

    /// Queue an event; the receiver yields its result once it is durable (or has failed). A
    /// dropped sender (writer gone) means `Unavailable`.
    pub fn submit(&self, event: Event) -> oneshot::Receiver<Result<Receipt, AuditError>> {
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = &self.tx {
            // If the writer thread is gone the job (and its reply sender) is dropped, which the
            // receiver sees as an error, mapped to `Unavailable` above.
            let _ = tx.send(Job { event, reply });
        }
        rx
    }

    /// The keyed reference of a token: HMAC-SHA256 under a key derived from the audit key,
    /// truncated to 16 bytes, hex. Equal tokens give equal references (so an auditor can follow
    /// one token through the log) and the reference reveals nothing about the token without the key.
    pub fn token_ref(&self, token: &str) -> String {
        self.keys.token_ref(token)
    }

    /// The public checkpoint key, for export to an auditor.
    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// The path of `audit.log`.
    pub fn path(&self) -> &Path {
        &self.log_path
    }

    /// Writer counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Events matching `filter` (admin API).
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>, AuditError> {
        query(&self.log_path, filter)
    }

    /// The last `n` events.
    pub fn tail(&self, n: usize) -> Result<Vec<Record>, AuditError> {
        tail(&self.log_path, n)
    }

    /// Verify the whole log with the full keys.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify(&self.log_path, &self.keys.verify_keys())
    }

    /// [`AuditLog::verify`], plus the MAC of the last event that verified (all zeros for an
    /// empty log), for an operator to compare with a copy kept elsewhere.
    pub fn verify_with_head(&self) -> Result<(VerifyReport, [u8; 32]), AuditError> {
        let scan = read::scan(&self.log_path, &self.keys.verify_keys())?;
        Ok((scan.report.clone(), scan.head))
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish its queue, write a final checkpoint and exit.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// fsync the directory holding `path`, so a created or renamed entry survives a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn config() -> Config {
        Config {
            checkpoint_every: 4,
            checkpoint_interval: Duration::from_secs(3600),
            max_batch: 4096,
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
}
