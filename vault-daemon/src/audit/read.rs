//! Reading the log: verification, query, tail, export, and the torn-tail repair.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::chain::{self, Checkpoint, GENESIS, Line, Record};
use super::{AuditError, Operation, VerifyKeys};

/// What the verifier found wrong, at the sequence number reported with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Defect {
    /// The last line is incomplete (no newline): a write was cut short.
    #[error("torn last line")]
    TornLine,
    /// A line that is not a valid event or checkpoint.
    #[error("unparsable line")]
    Unparsable,
    /// A line that parses but is not byte-identical to how the writer writes it (edited).
    #[error("line was edited (not in canonical form)")]
    NonCanonical,
    /// An event with an unexpected sequence number: events were deleted or reordered.
    #[error("expected this sequence number, found {found}: events deleted or reordered")]
    Sequence {
        /// The sequence number found instead.
        found: u64,
    },
    /// `prev` does not equal the previous event's MAC.
    #[error("chain link broken (prev does not match the previous event)")]
    BrokenLink,
    /// The event's MAC does not verify: its content was changed.
    #[error("MAC mismatch: event content changed")]
    Mac,
    /// A checkpoint whose signature does not verify.
    #[error("checkpoint signature invalid")]
    CheckpointSignature,
    /// A checkpoint that does not match the chain at its position.
    #[error("checkpoint does not match the chain")]
    CheckpointHead,
    /// The log has checkpoints but `audit.checkpoint` is missing.
    #[error("checkpoint file missing")]
    CheckpointFileMissing,
    /// `audit.checkpoint` is unreadable or its signature does not verify.
    #[error("checkpoint file invalid")]
    CheckpointFile,
    /// The log ends before the checkpoint file's sequence number: its tail was cut off.
    #[error("log truncated: the checkpoint file commits to sequence number {checkpoint_seq}")]
    Truncated {
        /// The sequence number the checkpoint file commits to.
        checkpoint_seq: u64,
    },
    /// The checkpoint file's (sequence number, head) is not in the log.
    #[error("checkpoint file does not match the log")]
    CheckpointFileMismatch,
}

/// The verifier's findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events that verified, before the first defect.
    pub events: u64,
    /// Checkpoints that verified, before the first defect.
    pub checkpoints: u64,
    /// The first bad sequence number and what is wrong there; `None` if the log verifies.
    pub first_bad: Option<(u64, Defect)>,
    /// Whether event MACs were checked (false for a public-key-only verifier, which checks
    /// signatures, sequence and linkage only).
    pub macs_checked: bool,
}

/// Query filter for the admin API. Events are returned in sequence order.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only events at or after this Unix time (ms).
    pub since_ms: Option<u64>,
    /// Only events before this Unix time (ms).
    pub until_ms: Option<u64>,
    /// Only this caller.
    pub caller: Option<String>,
    /// Only this operation.
    pub operation: Option<Operation>,
    /// Only this request id.
    pub request_id: Option<String>,
    /// Only this admin action.
    pub action: Option<String>,
    /// Skip this many matches.
    pub offset: usize,
    /// Return at most this many.
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms < t)
            && self.caller.as_ref().is_none_or(|c| *c == r.event.caller)
            && self.operation.is_none_or(|op| op == r.event.operation)
            && self
                .action
                .as_ref()
                .is_none_or(|a| r.event.action.as_ref() == Some(a))
            && self
                .request_id
                .as_ref()
                .is_none_or(|id| *id == r.event.request_id)
    }
}

pub(crate) struct ScanReport {
    pub(crate) report: VerifyReport,
    /// The first event's sequence number this file holds (or would hold): 1, or one past the
    /// signed checkpoint a later segment starts with (`segments`).
    pub(crate) first_seq: u64,
    /// The checkpoint the file starts from, if it is a later segment.
    pub(crate) start: Option<Checkpoint>,
    pub(crate) last_seq: u64,
    pub(crate) head: [u8; 32],
    pub(crate) last_checkpoint_seq: u64,
    /// The last checkpoint that verified (what a rotation seals the segment with).
    pub(crate) last_checkpoint: Option<Checkpoint>,
    /// Byte length of the log up to the end of the last good line.
    pub(crate) good_len: u64,
}

impl std::ops::Deref for ScanReport {
    type Target = VerifyReport;
    fn deref(&self) -> &VerifyReport {
        &self.report
    }
}

/// Verify `log` (and the `audit.checkpoint` beside it) and report the first defect.
pub fn verify(log: &Path, keys: &VerifyKeys) -> Result<VerifyReport, AuditError> {
    Ok(scan(log, keys)?.report)
}

pub(crate) fn scan(log: &Path, keys: &VerifyKeys) -> Result<ScanReport, AuditError> {
    scan_prefix(log, keys, u64::MAX)
}

/// [`scan`] of a closed segment: the same checks, without the checkpoint file (which belongs to
/// the active segment).
pub(crate) fn scan_segment(log: &Path, keys: &VerifyKeys) -> Result<ScanReport, AuditError> {
    scan_with(log, keys, u64::MAX, false)
}

/// [`scan`] of the first `limit` bytes of the log only (the checkpoint file is checked against
/// that prefix): how a torn tail's good part is verified on its own before it is kept.
fn scan_prefix(log: &Path, keys: &VerifyKeys, limit: u64) -> Result<ScanReport, AuditError> {
    scan_with(log, keys, limit, true)
}

fn scan_with(
    log: &Path,
    keys: &VerifyKeys,
    limit: u64,
    check_file: bool,
) -> Result<ScanReport, AuditError> {
    let mut s = ScanReport {
        first_seq: 1,
        start: None,
        report: VerifyReport {
            events: 0,
            checkpoints: 0,
            first_bad: None,
            macs_checked: keys.mac.is_some(),
        },
        last_seq: 0,
        head: GENESIS,
        last_checkpoint_seq: 0,
        last_checkpoint: None,
        good_len: 0,
    };
    let mut seen_checkpoints: HashMap<u64, [u8; 32]> = HashMap::new();
    let file = match File::open(log) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io(log, e)),
    };
    if let Some(file) = file {
        let mut reader = BufReader::new(file.take(limit));
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| AuditError::io(log, e))?;
            if n == 0 {
                break;
            }
            let bad_at = s.last_seq + 1;
            if raw.last() != Some(&b'\n') {
                s.report.first_bad = Some((bad_at, Defect::TornLine));
                return Ok(s);
            }
            let text = &raw[..raw.len() - 1];
            let Ok(line) = serde_json::from_slice::<Line>(text) else {
                s.report.first_bad = Some((bad_at, Defect::Unparsable));
                return Ok(s);
            };
            if line.to_json().as_bytes() != text {
                s.report.first_bad = Some((bad_at, Defect::NonCanonical));
                return Ok(s);
            }
            // A later segment opens with the signed checkpoint the previous one was sealed
            // with: the chain continues from it (its signature is the whole check here; that
            // it equals the previous segment's seal is `segments::verify_all`'s).
            if s.good_len == 0
                && let Line::Checkpoint(cp) = &line
                && cp.seq > 0
            {
                let Some(head) = check_signature(cp, keys) else {
                    s.report.first_bad = Some((cp.seq, Defect::CheckpointSignature));
                    return Ok(s);
                };
                s.last_seq = cp.seq;
                s.first_seq = cp.seq + 1;
                s.head = head;
                s.last_checkpoint_seq = cp.seq;
                s.last_checkpoint = Some(cp.clone());
                s.start = Some(cp.clone());
                seen_checkpoints.insert(cp.seq, head);
                s.good_len += n as u64;
                continue;
            }
            if let Err(bad) = check_line(&mut s, &line, keys, &mut seen_checkpoints) {
                s.report.first_bad = Some(bad);
                return Ok(s);
            }
            s.good_len += n as u64;
        }
    }
    if check_file {
        s.report.first_bad = check_checkpoint_file(log, &s, keys, &seen_checkpoints).err();
    }
    Ok(s)
}

fn check_line(
    s: &mut ScanReport,
    line: &Line,
    keys: &VerifyKeys,
    seen: &mut HashMap<u64, [u8; 32]>,
) -> Result<(), (u64, Defect)> {
    let expected = s.last_seq + 1;
    match line {
        Line::Event(r) => {
            if r.seq != expected {
                return Err((expected, Defect::Sequence { found: r.seq }));
            }
            let prev = chain::decode_mac(&r.prev).ok_or((expected, Defect::Unparsable))?;
            let mac = chain::decode_mac(&r.mac).ok_or((expected, Defect::Unparsable))?;
            if prev != s.head {
                return Err((expected, Defect::BrokenLink));
            }
            if let Some(key) = &keys.mac
                && !chain::verify_event_mac(key, r, &prev, &mac)
            {
                return Err((expected, Defect::Mac));
            }
            s.head = mac;
            s.last_seq = r.seq;
            s.report.events += 1;
        }
        Line::Checkpoint(cp) => {
            let head = check_signature(cp, keys).ok_or((cp.seq, Defect::CheckpointSignature))?;
            if cp.seq != s.last_seq || head != s.head {
                return Err((cp.seq, Defect::CheckpointHead));
            }
            seen.insert(cp.seq, head);
            s.last_checkpoint_seq = cp.seq;
            s.last_checkpoint = Some(cp.clone());
            s.report.checkpoints += 1;
        }
    }
    Ok(())
}

/// The checkpoint's head if its signature verifies.
fn check_signature(cp: &Checkpoint, keys: &VerifyKeys) -> Option<[u8; 32]> {
    let head = chain::decode_mac(&cp.head)?;
    let sig = hex::decode(&cp.sig).ok()?;
    keys.public
        .verify(&chain::checkpoint_message(cp.seq, &head, cp.time_ms), &sig)
        .then_some(head)
}

fn check_checkpoint_file(
    log: &Path,
    s: &ScanReport,
    keys: &VerifyKeys,
    seen: &HashMap<u64, [u8; 32]>,
) -> Result<(), (u64, Defect)> {
    let path = checkpoint_path(log);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if s.report.checkpoints > 0 {
                Err((s.last_checkpoint_seq, Defect::CheckpointFileMissing))
            } else {
                Ok(())
            };
        }
        Err(_) => return Err((s.last_seq, Defect::CheckpointFile)),
    };
    let cp = match serde_json::from_str::<Line>(text.trim_end()) {
        Ok(Line::Checkpoint(cp)) => cp,
        _ => return Err((s.last_seq, Defect::CheckpointFile)),
    };
    let head = check_signature(&cp, keys).ok_or((cp.seq, Defect::CheckpointFile))?;
    if cp.seq > s.last_seq {
        return Err((
            s.last_seq + 1,
            Defect::Truncated {
                checkpoint_seq: cp.seq,
            },
        ));
    }
    if seen.get(&cp.seq) != Some(&head) {
        return Err((cp.seq, Defect::CheckpointFileMismatch));
    }
    Ok(())
}

/// `audit.checkpoint` beside the given `audit.log`.
pub(crate) fn checkpoint_path(log: &Path) -> PathBuf {
    log.with_file_name(super::CHECKPOINT_FILE)
}

/// Every complete line of the log, parsed; lines that do not parse are skipped (integrity is
/// `verify`'s job) and an incomplete last line (a write in progress) is ignored.
fn for_each_event(log: &Path, mut f: impl FnMut(Record, &[u8])) -> Result<(), AuditError> {
    let file = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AuditError::io(log, e)),
    };
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| AuditError::io(log, e))?;
        if n == 0 || raw.last() != Some(&b'\n') {
            return Ok(());
        }
        if let Ok(Line::Event(record)) = serde_json::from_slice::<Line>(&raw) {
            f(record, &raw);
        }
    }
}

/// Events matching `filter`, in sequence order.
pub fn query(log: &Path, filter: &Filter) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    let limit = filter.limit.unwrap_or(usize::MAX);
    for_each_event(log, |r, _| {
        if out.len() < limit && filter.matches(&r) {
            if skipped < filter.offset {
                skipped += 1;
            } else {
                out.push(r);
            }
        }
    })?;
    Ok(out)
}

/// The last `n` events.
pub fn tail(log: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let mut out = VecDeque::with_capacity(n.min(4096));
    for_each_event(log, |r, _| {
        if n > 0 {
            if out.len() == n {
                out.pop_front();
            }
            out.push_back(r);
        }
    })?;
    Ok(out.into())
}

/// Write the stored lines of matching events to `out` as JSON lines; returns how many. (For a
/// copy that an auditor can verify, copy `audit.log` and `audit.checkpoint` as they are.)
pub fn export(log: &Path, filter: &Filter, out: &mut dyn Write) -> Result<u64, AuditError> {
    let mut count = 0u64;
    let mut skipped = 0;
    let limit = filter.limit.unwrap_or(usize::MAX) as u64;
    let mut result = Ok(());
    for_each_event(log, |r, raw| {
        if result.is_ok() && count < limit && filter.matches(&r) {
            if skipped < filter.offset {
                skipped += 1;
            } else {
                result = out.write_all(raw);
                count += 1;
            }
        }
    })?;
    result.map_err(|e| AuditError::io(Path::new("<export>"), e))?;
    Ok(count)
}

/// A torn final line found when the log was opened, and set aside ([`recover_torn_tail`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Bytes cut off the end of the log.
    pub bytes: u64,
    /// SHA-256 of those bytes, hex.
    pub sha256: String,
    /// Where they were saved, next to the log.
    pub quarantine: PathBuf,
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes (sha256 {}) moved to {}",
            self.bytes,
            self.sha256,
            self.quarantine.file_name().map_or_else(
                || self.quarantine.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        )
    }
}

/// The action of the chained event that records a torn-tail recovery.
pub const TORN_TAIL_ACTION: &str = "audit.torn_tail_recovered";

/// What a crash or power loss during an append leaves is a torn final line: bytes of an event
/// (or checkpoint) whose fsync never completed, so no caller was ever answered for it (the
/// daemon answers only after the fsync). If — and only if — that is the log's one defect, this
/// saves the torn bytes to `audit.log.torn-<unix ms>`, truncates the log to its last complete
/// line and fsyncs both. Before anything is changed, the complete lines are verified on their
/// own, the checkpoint file included, so a log cut below its checkpoint (or edited) that also
/// ends in a partial line is still refused as corrupt. `Ok(None)`: nothing was torn.
pub fn recover_torn_tail(log: &Path, keys: &VerifyKeys) -> Result<Option<TornTail>, AuditError> {
    Ok(scan_recovering(log, keys)?.1)
}

/// [`recover_torn_tail`] and the scan of the log as it is afterwards, from one pass over the
/// log (two when a tail was torn): what opening the log needs, without verifying it twice.
pub(crate) fn scan_recovering(
    log: &Path,
    keys: &VerifyKeys,
) -> Result<(ScanReport, Option<TornTail>), AuditError> {
    let s = scan(log, keys)?;
    if !matches!(s.report.first_bad, Some((_, Defect::TornLine))) {
        return Ok((s, None));
    }
    let prefix = scan_prefix(log, keys, s.good_len)?;
    if let Some((seq, defect)) = prefix.report.first_bad {
        return Err(AuditError::Corrupt { seq, defect });
    }
    let bytes = fs::read(log).map_err(|e| AuditError::io(log, e))?;
    let torn = bytes.get(s.good_len as usize..).unwrap_or_default();
    let quarantine = quarantine_path(log);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&quarantine)
            .map_err(|e| AuditError::io(&quarantine, e))?;
        f.write_all(torn)
            .and_then(|()| f.sync_all())
            .map_err(|e| AuditError::io(&quarantine, e))?;
    }
    super::sync_dir(&quarantine)?;
    let file = OpenOptions::new()
        .write(true)
        .open(log)
        .map_err(|e| AuditError::io(log, e))?;
    file.set_len(s.good_len)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io(log, e))?;
    let torn = TornTail {
        bytes: torn.len() as u64,
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, torn)),
        quarantine,
    };
    Ok((prefix, Some(torn)))
}

/// `audit.log.torn-<unix ms>` beside the log, never an existing file (an earlier recovery's
/// quarantine is evidence too).
fn quarantine_path(log: &Path) -> PathBuf {
    let base = format!(
        "{}.torn-{}",
        log.file_name()
            .map_or_else(|| "audit.log".into(), |n| n.to_string_lossy()),
        super::now_ms()
    );
    let mut path = log.with_file_name(&base);
    let mut n = 1;
    while path.exists() {
        path = log.with_file_name(format!("{base}-{n}"));
        n += 1;
    }
    path
}

/// Operator action after a crash tore the last line (the daemon now does this by itself at
/// start, see [`recover_torn_tail`]): if (and only if) the log's first defect is a torn final
/// line, save the torn bytes beside the log and cut them off. Returns the number of bytes
/// removed.
pub fn repair_torn_tail(log: &Path, keys: &VerifyKeys) -> Result<u64, AuditError> {
    match recover_torn_tail(log, keys)? {
        Some(t) => Ok(t.bytes),
        None => Err(AuditError::NotRepairable),
    }
}
