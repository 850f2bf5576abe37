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
pub mod segments;
pub mod ship;
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

pub use self::writer::Commit;
use self::writer::{Counters, FileSink, Job, Sink};

/// File names inside the data directory.
pub const LOG_FILE: &str = "audit.log";
/// The latest checkpoint, atomically replaced.
pub const CHECKPOINT_FILE: &str = "audit.checkpoint";
/// MAC key and checkpoint signing seed (0600).
pub const KEY_FILE: &str = "audit.key";
/// The default size of a segment: 64 MiB, about 200,000 events, which start-up verifies in
/// well under a second (BENCHMARKS.md, "The audit log").
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

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
    /// The proxy route and rule a proxied request matched (`inbound:<route>/<rule>`,
    /// `outbound:<route>/<rule>`); the caller is then the route's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// For an outbound route: the caller that sent the request through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
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
            route: None,
            on_behalf_of: None,
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
    /// Seal and rotate the active segment once it holds this many bytes (0: one file forever).
    pub segment_bytes: u64,
    /// Seal and rotate it once it is this old (and holds an event), whatever its size.
    pub segment_age: Option<Duration>,
    /// A second sink each durable batch is copied to (`ship`); never on the call's path.
    pub ship: Option<Arc<ship::Shipper>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            max_batch: 4096,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_age: None,
            ship: None,
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
        segments::finish_rotation(dir)?;
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

    /// Call `observe` after every group commit that reached the disk (once; later calls are
    /// ignored).
    pub fn observe_commits(&self, observe: Arc<dyn Fn(Commit) + Send + Sync>) {
        let _ = self.counters.observer.set(observe);
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

    /// Verify the active segment with the full keys.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify(&self.log_path, &self.keys.verify_keys())
    }

    /// Verify every segment present (closed ones and the active one) with the full keys.
    pub fn verify_segments(&self) -> Result<segments::SegmentsReport, AuditError> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        segments::verify_all(dir, &self.keys.verify_keys(), None)
    }

    /// Every segment present verified in order ([`segments::verify_all`]), plus the MAC of the
    /// active segment's last event that verified (all zeros for an empty log), for an operator
    /// to compare with a copy kept elsewhere.
    pub fn verify_with_head(&self) -> Result<(VerifyReport, [u8; 32]), AuditError> {
        let keys = self.keys.verify_keys();
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let all = segments::verify_all(dir, &keys, None)?;
        let scan = read::scan(&self.log_path, &keys)?;
        let report = VerifyReport {
            events: all.events,
            checkpoints: all.checkpoints,
            first_bad: all.first_bad.map(|(_, seq, defect)| (seq, defect)),
            macs_checked: all.macs_checked,
        };
        Ok((report, scan.head))
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
    crate::durable::sync_parent(path).map_err(|e| AuditError::io(path, e))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
