//! The writer thread: group commit, checkpoints, rollback on failure.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::chain::{self, Checkpoint, Line, Record};
use super::read::ScanReport;
use super::{AuditError, Config, Event, Keys, Receipt, Stats, now_ms};

pub(crate) struct Job {
    pub(crate) event: Event,
    pub(crate) reply: oneshot::Sender<Result<Receipt, AuditError>>,
}

/// Where the writer puts bytes. A trait so tests can inject failures.
pub(crate) trait Sink: Send {
    /// Append bytes at the end of the log.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Make everything appended durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Current length of the log.
    fn len(&self) -> u64;
    /// Cut the log back to `len` (undo a failed append) and make that durable.
    fn rollback(&mut self, len: u64) -> io::Result<()>;
    /// Atomically replace the checkpoint file.
    fn publish(&mut self, checkpoint: &Checkpoint) -> io::Result<()>;
    /// Close the active segment (which ends with `seal`) as the segment starting at `first`,
    /// and continue in a new one opening with `seal` (`segments`). Sinks of tests that never
    /// rotate keep the default.
    fn rotate(&mut self, seal: &Checkpoint, first: u64) -> io::Result<()> {
        let _ = (seal, first);
        Err(io::Error::other("this sink does not rotate"))
    }
}

pub(crate) struct FileSink {
    file: File,
    len: u64,
    log_path: PathBuf,
    checkpoint_path: PathBuf,
}

impl FileSink {
    pub(crate) fn open(log: &Path, checkpoint_path: &Path) -> Result<Self, AuditError> {
        let existed = log.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| AuditError::io(log, e))?;
        if !existed {
            super::sync_dir(log)?;
        }
        let len = file.metadata().map_err(|e| AuditError::io(log, e))?.len();
        Ok(FileSink {
            file,
            len,
            log_path: log.to_owned(),
            checkpoint_path: checkpoint_path.to_owned(),
        })
    }
}

#[cfg(test)]
impl FileSink {
    pub(crate) fn for_test(file: File, log: &Path, checkpoint_path: &Path) -> Self {
        let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        FileSink {
            file,
            len,
            log_path: log.to_owned(),
            checkpoint_path: checkpoint_path.to_owned(),
        }
    }
}

impl Sink for FileSink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // Data only: the file length is part of what fdatasync makes durable.
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rollback(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }

    fn publish(&mut self, checkpoint: &Checkpoint) -> io::Result<()> {
        let mut line = Line::Checkpoint(checkpoint.clone()).to_json();
        line.push('\n');
        crate::durable::write_atomic(&self.checkpoint_path, line.as_bytes(), 0o600)
    }
    fn rotate(&mut self, seal: &Checkpoint, first: u64) -> io::Result<()> {
        super::segments::rotate(&self.log_path, seal, first)?;
        self.file = OpenOptions::new().append(true).open(&self.log_path)?;
        self.len = self.file.metadata()?.len();
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    events: AtomicU64,
    fsyncs: AtomicU64,
    checkpoints: AtomicU64,
    /// Told of every group commit that reached the disk (metrics).
    pub(crate) observer: std::sync::OnceLock<Arc<dyn Fn(Commit) + Send + Sync>>,
}

/// One group commit, as the writer saw it.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    /// Events in the batch.
    pub events: usize,
    /// The append (`write`) of the batch.
    pub append: Duration,
    /// Its fsync.
    pub fsync: Duration,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            events: self.events.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}

/// The chain position the writer continues from.
#[derive(Clone)]
pub(crate) struct State {
    next_seq: u64,
    head: [u8; 32],
    since_checkpoint: u64,
    /// The last checkpoint written (what a rotation seals with).
    last_checkpoint: Option<Checkpoint>,
    /// The first sequence number of the active segment.
    segment_first: u64,
}

impl State {
    pub(crate) fn resume(report: &ScanReport) -> Self {
        State {
            next_seq: report.last_seq + 1,
            head: report.head,
            since_checkpoint: report.last_seq - report.last_checkpoint_seq,
            last_checkpoint: report.last_checkpoint.clone(),
            segment_first: report.first_seq,
        }
    }
}

struct Writer {
    sink: Box<dyn Sink>,
    keys: Arc<Keys>,
    state: State,
    config: Config,
    counters: Arc<Counters>,
    last_checkpoint: Instant,
    segment_started: Instant,
    poisoned: bool,
}

pub(crate) fn spawn(
    rx: Receiver<Job>,
    sink: Box<dyn Sink>,
    keys: Arc<Keys>,
    state: State,
    config: Config,
    counters: Arc<Counters>,
) -> io::Result<JoinHandle<()>> {
    let mut writer = Writer {
        sink,
        keys,
        state,
        config,
        counters,
        last_checkpoint: Instant::now(),
        segment_started: Instant::now(),
        poisoned: false,
    };
    thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(rx))
}

impl Writer {
    fn run(&mut self, rx: Receiver<Job>) {
        loop {
            let wait = if self.state.since_checkpoint > 0 {
                self.config
                    .checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    let mut batch = vec![job];
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                    self.maybe_rotate();
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.commit(Vec::new());
                    self.maybe_rotate();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Final checkpoint so a clean shutdown leaves no unprotected tail.
                    if self.state.since_checkpoint > 0 {
                        self.commit_with(Vec::new(), true);
                    }
                    return;
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        let interval_due = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        self.commit_with(batch, interval_due);
    }

    /// Write a batch (and a checkpoint when due) with one append and one fsync, then answer
    /// every caller. On failure nothing of the batch stays in the log and the chain state is
    /// unchanged, so later batches still chain correctly.
    fn commit_with(&mut self, batch: Vec<Job>, interval_due: bool) {
        if self.poisoned {
            return fail(batch);
        }
        let saved = self.state.clone();
        let start_len = self.sink.len();
        let time_ms = now_ms();
        let mut buf = Vec::with_capacity(batch.len() * 320);
        let mut receipts = Vec::with_capacity(batch.len());
        let mut checkpoint = None;
        let mut replies = Vec::with_capacity(batch.len());
        for Job { event, reply } in batch {
            let seq = self.state.next_seq;
            let mac = chain::event_mac(&self.keys.mac, seq, time_ms, &event, &self.state.head);
            let record = Record {
                seq,
                time_ms,
                event,
                prev: hex::encode(self.state.head),
                mac: hex::encode(mac),
            };
            push_line(&mut buf, &Line::Event(record));
            receipts.push(Receipt {
                seq,
                mac: hex::encode(mac),
            });
            replies.push(reply);
            self.state.head = mac;
            self.state.next_seq += 1;
            self.state.since_checkpoint += 1;
            if self.state.since_checkpoint >= self.config.checkpoint_every {
                checkpoint = Some(self.checkpoint(&mut buf, time_ms));
            }
        }
        if interval_due && self.state.since_checkpoint > 0 {
            checkpoint = Some(self.checkpoint(&mut buf, time_ms));
        }
        if buf.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut appended = started;
        let written = match self.sink.append(&buf) {
            Ok(()) => {
                appended = Instant::now();
                self.sink.sync().map_err(|_| true)
            }
            Err(_) => Err(false),
        };
        match written {
            Ok(()) => {
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                if let Some(observe) = self.counters.observer.get() {
                    observe(Commit {
                        events: receipts.len(),
                        append: appended - started,
                        fsync: appended.elapsed(),
                    });
                }
                // The batch is durable and the log is consistent. If the checkpoint file cannot
                // be replaced, truncation protection is weakened: stop (fail closed) without
                // touching the log, whose content the checkpoint file may already describe.
                if let Some(cp) = &checkpoint
                    && self.sink.publish(cp).is_err()
                {
                    self.poisoned = true;
                    return fail_replies(replies);
                }
                // Durable: only now may a copy leave (queued, never waited for).
                if let Some(ship) = &self.config.ship {
                    ship.ship(&buf);
                }
            }
            // A failed write: cut the partial batch off. If that fails too, the file's tail is
            // unknown and the writer stops appending.
            Err(false) => {
                self.poisoned = self.sink.rollback(start_len).is_err();
                self.state = saved;
                return fail_replies(replies);
            }
            // A failed fsync: after it the kernel may have dropped dirty pages and cleared the
            // error (the "fsyncgate" behaviour), so the file can no longer be trusted.
            Err(true) => {
                self.poisoned = true;
                let _ = self.sink.rollback(start_len);
                self.state = saved;
                return fail_replies(replies);
            }
        }
        if let Some(cp) = checkpoint {
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            self.last_checkpoint = Instant::now();
            self.state.last_checkpoint = Some(cp);
        }
        self.counters
            .events
            .fetch_add(receipts.len() as u64, Ordering::Relaxed);
        for (reply, receipt) in replies.into_iter().zip(receipts) {
            let _ = reply.send(Ok(receipt));
        }
    }

    /// Seals and rotates the active segment when it is full (or old). A failure poisons the
    /// writer: the files' state is then unknown, as after a failed fsync.
    fn maybe_rotate(&mut self) {
        if self.poisoned || self.state.next_seq <= self.state.segment_first {
            return;
        }
        let full = self.config.segment_bytes > 0 && self.sink.len() >= self.config.segment_bytes;
        let old = self
            .config
            .segment_age
            .is_some_and(|age| self.segment_started.elapsed() >= age);
        if !(full || old) {
            return;
        }
        if self.state.since_checkpoint > 0 || self.state.last_checkpoint.is_none() {
            self.commit_with(Vec::new(), true);
        }
        let last = self.state.next_seq - 1;
        let seal = match &self.state.last_checkpoint {
            Some(cp) if !self.poisoned && cp.seq == last => cp.clone(),
            _ => return,
        };
        if self.sink.rotate(&seal, self.state.segment_first).is_err() {
            self.poisoned = true;
            return;
        }
        self.state.segment_first = last + 1;
        self.segment_started = Instant::now();
    }

    fn checkpoint(&mut self, buf: &mut Vec<u8>, time_ms: u64) -> Checkpoint {
        let seq = self.state.next_seq - 1;
        let msg = chain::checkpoint_message(seq, &self.state.head, time_ms);
        let sig = self.keys.signing.sign(&msg);
        let cp = Checkpoint {
            seq,
            head: hex::encode(self.state.head),
            time_ms,
            sig: hex::encode(sig.as_ref()),
        };
        push_line(buf, &Line::Checkpoint(cp.clone()));
        self.state.since_checkpoint = 0;
        cp
    }
}

fn push_line(buf: &mut Vec<u8>, line: &Line) {
    buf.extend_from_slice(line.to_json().as_bytes());
    buf.push(b'\n');
}

fn fail(batch: Vec<Job>) {
    fail_replies(batch.into_iter().map(|j| j.reply).collect());
}

fn fail_replies(replies: Vec<oneshot::Sender<Result<Receipt, AuditError>>>) {
    for reply in replies {
        let _ = reply.send(Err(AuditError::Unavailable));
    }
}
