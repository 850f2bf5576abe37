//! Segments: the log in files of bounded size, so that start-up time does not grow with the
//! vault's age.
//!
//! `audit.log` is the active segment. When it passes `segment_bytes` (or `segment_age`), the
//! writer seals it with a signed checkpoint of its last event and rotates:
//!
//! 1. `audit.log.next` is written with that checkpoint as its first line, and fsynced;
//! 2. `audit.log` is renamed to `audit-<first seq>-<last seq>.log` (20 digits each, so names
//!    sort in chain order);
//! 3. `audit.log.next` is renamed to `audit.log`, and the directory fsynced.
//!
//! A later segment therefore carries the checkpoint it continues from: start-up verifies the
//! active segment alone, from that signed checkpoint on, and a closed segment moved elsewhere
//! (archived) leaves what remains verifiable. Opening finishes a rotation a crash interrupted
//! ([`finish_rotation`]): after step 1 the half-made next segment is removed (the writer rotates
//! again); after step 2 it becomes `audit.log`.
//!
//! [`verify_all`] walks every segment present, in order: each must verify on its own, each
//! closed one must end with the checkpoint of its last event, and each must start where the one
//! before it was sealed (same sequence number and chain head). The first segment present is
//! trusted from its opening checkpoint's signature: the events before it are archived, and an
//! auditor checks them against the archive.

use std::fs;
use std::path::{Path, PathBuf};

use super::chain::{Checkpoint, Line};
use super::read::{self, Defect};
use super::{AuditError, LOG_FILE, VerifyKeys};

/// The half-made next segment of an interrupted rotation.
pub(crate) const NEXT_FILE: &str = "audit.log.next";

/// The file name of the closed segment holding events `first..=last`.
pub(crate) fn segment_name(first: u64, last: u64) -> String {
    format!("audit-{first:020}-{last:020}.log")
}

/// `(first, last)` of a closed segment's file name.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    let (a, b) = rest.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Closed segments in `dir`, in chain order: `(first, last, path)`.
pub fn closed_segments(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        if let Some((first, last)) = entry.file_name().to_str().and_then(parse_name) {
            out.push((first, last, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Completes (or undoes) a rotation a crash interrupted, before the log is scanned.
pub(crate) fn finish_rotation(dir: &Path) -> Result<(), AuditError> {
    let next = dir.join(NEXT_FILE);
    if !next.exists() {
        return Ok(());
    }
    let log = dir.join(LOG_FILE);
    if log.exists() {
        // Step 1 done, step 2 not: the active segment is whole; drop the half-made next one.
        fs::remove_file(&next).map_err(|e| AuditError::io(&next, e))?;
    } else {
        // Step 2 done, step 3 not.
        fs::rename(&next, &log).map_err(|e| AuditError::io(&log, e))?;
    }
    super::sync_dir(&log)
}

/// Rotates: `log` (ending with `seal`) becomes the closed segment `first..=seal.seq`, and a new
/// `audit.log` starts with `seal`. The order of the steps is the module's.
pub(crate) fn rotate(log: &Path, seal: &Checkpoint, first: u64) -> std::io::Result<()> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let next = dir.join(NEXT_FILE);
    let mut line = Line::Checkpoint(seal.clone()).to_json();
    line.push('\n');
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&next)?;
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(log, dir.join(segment_name(first, seal.seq)))?;
    fs::rename(&next, log)?;
    crate::durable::sync_parent(log)
}

/// What [`verify_all`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentsReport {
    /// Segment files verified (closed ones and the active one).
    pub segments: u64,
    /// Events in them, before the first defect.
    pub events: u64,
    /// Checkpoints in them.
    pub checkpoints: u64,
    /// The first sequence number present (1 unless earlier segments were archived).
    pub first_seq: u64,
    /// The last sequence number that verified.
    pub last_seq: u64,
    /// The first defect: the file, the sequence number, what is wrong.
    pub first_bad: Option<(PathBuf, u64, Defect)>,
    /// Whether event MACs were checked.
    pub macs_checked: bool,
}

/// Verifies every segment in `dir` (closed ones, then `audit.log`), or only those holding
/// sequence numbers in `range` (a segment wholly outside it is skipped, and the link into the
/// first one checked is then trusted from its signed opening checkpoint).
pub fn verify_all(
    dir: &Path,
    keys: &VerifyKeys,
    range: Option<(u64, u64)>,
) -> Result<SegmentsReport, AuditError> {
    let log = dir.join(LOG_FILE);
    let mut files: Vec<(Option<(u64, u64)>, PathBuf)> = closed_segments(dir)?
        .into_iter()
        .map(|(a, b, p)| (Some((a, b)), p))
        .collect();
    // The active segment starts after the last closed one.
    let active_first = files
        .last()
        .and_then(|(b, _)| *b)
        .map_or(1, |(_, last)| last + 1);
    if range.is_none_or(|(_, hi)| hi >= active_first) {
        files.push((None, log));
    }
    let mut report = SegmentsReport {
        segments: 0,
        events: 0,
        checkpoints: 0,
        first_seq: 0,
        last_seq: 0,
        first_bad: None,
        macs_checked: keys.mac.is_some(),
    };
    // (seq, head) the previous segment checked was sealed with.
    let mut sealed: Option<(u64, String)> = None;
    for (bounds, path) in files {
        if let (Some((lo, hi)), Some((first, last))) = (range, bounds)
            && (last < lo || first > hi)
        {
            sealed = None;
            continue;
        }
        let active = bounds.is_none();
        let scan = if active {
            read::scan(&path, keys)?
        } else {
            read::scan_segment(&path, keys)?
        };
        report.segments += 1;
        report.events += scan.report.events;
        report.checkpoints += scan.report.checkpoints;
        if report.first_seq == 0 {
            report.first_seq = scan.first_seq;
        }
        let bad = |seq, defect| Some((path.clone(), seq, defect));
        if let Some((seq, defect)) = scan.report.first_bad.clone() {
            report.first_bad = bad(seq, defect);
            return Ok(report);
        }
        // Continuity with the segment before (when it was checked too).
        if let Some((seq, head)) = &sealed {
            let starts = scan.start.as_ref().map(|c| (c.seq, c.head.clone()));
            if starts.as_ref() != Some(&(*seq, head.clone())) {
                report.first_bad = bad(seq + 1, Defect::BrokenLink);
                return Ok(report);
            }
        }
        if let Some((first, last)) = bounds {
            // A closed segment holds what its name says and ends with its seal.
            if scan.first_seq != first || scan.last_seq != last || scan.last_checkpoint_seq != last
            {
                report.first_bad = bad(scan.last_seq + 1, Defect::CheckpointHead);
                return Ok(report);
            }
        }
        report.last_seq = scan.last_seq.max(report.last_seq);
        sealed = Some((scan.last_seq, hex::encode(scan.head)));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order_and_parse_back() {
        let a = segment_name(1, 99_999);
        let b = segment_name(100_000, 200_000);
        assert!(a < b);
        assert_eq!(parse_name(&a), Some((1, 99_999)));
        assert_eq!(parse_name("audit-1-2.log"), None);
        assert_eq!(parse_name(LOG_FILE), None);
    }
}
