//! Rewrap jobs: re-encrypt a template's records under its newest data-key (and fingerprint-key)
//! version, in batches, while live traffic goes on.
//!
//! ```text
//!            run                 stop requested
//!  Pending ───────▶ Running ◀──────────────────▶ Paused
//!                    │   ▲ resume after a crash (Running → Running)
//!                    │   └──────────── Failed (resume)
//!                    ├── error ──▶ Failed
//!                    └── nothing left ──▶ Completed
//! ```
//!
//! Each batch re-encrypts up to N records and saves the job's cursor (the last record id done)
//! in the same transaction as the records, so after a crash the job resumes right after the
//! last committed batch. Every record update is a compare-and-set on the record's old key
//! version: a batch replayed after a crash, or a record deleted or rewrapped meanwhile, is
//! skipped, never encrypted twice and never lost. Records written during the job are already
//! under the active version and are not selected.

use super::{Error, Mode, Vault};
use crate::envelope;
pub use crate::store::JobState;
use crate::store::{RecordUpdate, RewrapJobRow};

impl JobState {
    /// Whether the job may go from `self` to `to`.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Running)
                | (Paused, Running)
                | (Failed, Running)
                | (Running, Paused)
                | (Running, Completed)
                | (Running, Failed)
                | (Pending, Paused)
        )
    }
}

/// A rewrap job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapJob {
    /// Job id.
    pub id: u64,
    /// Template whose records move.
    pub template: String,
    /// Data-key version records move to.
    pub target_version: u32,
    /// Fingerprint-key version fingerprints move to (0 when not deterministic).
    pub target_fp_version: u32,
    /// State.
    pub state: JobState,
    /// Last record id done.
    pub cursor: u64,
    /// Records rewrapped so far.
    pub processed: u64,
    /// The node id holding the job's lease (empty when free).
    pub owner: String,
}

impl RewrapJob {
    fn from_row(row: &RewrapJobRow) -> Result<RewrapJob, Error> {
        Ok(RewrapJob {
            id: row.id,
            template: row.template.clone(),
            target_version: row.target_version,
            target_fp_version: row.target_fp_version,
            state: row.state,
            cursor: row.cursor,
            processed: row.processed,
            owner: row.owner.clone(),
        })
    }

    fn to_row(&self, created_at: i64, now: i64) -> RewrapJobRow {
        RewrapJobRow {
            id: self.id,
            template: self.template.clone(),
            target_version: self.target_version,
            target_fp_version: self.target_fp_version,
            state: self.state,
            cursor: self.cursor,
            processed: self.processed,
            created_at,
            updated_at: now,
            owner: self.owner.clone(),
        }
    }
}

impl Vault {
    /// Starts a rewrap of `template` to its active key versions, or returns the unfinished job
    /// for the same targets so it can be resumed.
    pub fn rewrap_start(&self, template: &str) -> Result<RewrapJob, Error> {
        let cfg = self.template(template)?;
        let Mode::Vaulted { deterministic, .. } = cfg.mode else {
            return Err(Error::NotSupported {
                operation: "rewrap",
                template: template.to_owned(),
                mode: "fpe",
            });
        };
        let (target_version, target_fp_version) = {
            let state = self.read_state();
            let u = state.as_ref().ok_or(Error::Sealed)?;
            let v = u.ring.active(&format!("data/{template}"))?.0;
            let f = if deterministic {
                u.ring.active(&format!("fp/{template}"))?.0
            } else {
                0
            };
            (v, f)
        };
        for row in self.store.rewrap_jobs()? {
            let job = RewrapJob::from_row(&row)?;
            if job.template == template
                && job.target_version == target_version
                && job.target_fp_version == target_fp_version
                && job.state != JobState::Completed
            {
                return Ok(job);
            }
        }
        let mut job = RewrapJob {
            id: 0,
            template: template.to_owned(),
            target_version,
            target_fp_version,
            state: JobState::Pending,
            cursor: 0,
            processed: 0,
            owner: String::new(),
        };
        job.id = self
            .store
            .rewrap_job_create(&job.to_row(self.now(), self.now()))?;
        Ok(job)
    }

    /// A job by id.
    pub fn rewrap_job(&self, id: u64) -> Result<RewrapJob, Error> {
        let row = self
            .store
            .rewrap_job_get(id)?
            .ok_or(Error::UnknownJob(id))?;
        RewrapJob::from_row(&row)
    }

    /// Every job, newest first.
    pub fn rewrap_jobs(&self) -> Result<Vec<RewrapJob>, Error> {
        self.store
            .rewrap_jobs()?
            .iter()
            .map(RewrapJob::from_row)
            .collect()
    }

    /// How many records of the job's template are still under older versions.
    pub fn rewrap_remaining(&self, job: &RewrapJob) -> Result<u64, Error> {
        let mut total = 0;
        for v in 1..job.target_version {
            total += self.store.count_by_key_version(&job.template, v)?;
        }
        Ok(total)
    }

    /// Runs (or resumes) a job in batches of `batch` records until nothing is left, or until
    /// `keep_going` returns false after a batch (the job is then `Paused`). `keep_going` sees
    /// the job after each committed batch, for progress reporting.
    ///
    /// Batches are pipelined: while one batch commits (on the store's writer), the next one is
    /// read and re-encrypted on a second thread. The next batch lies above the committing
    /// batch's last id, so the two never touch the same record, and commits stay in cursor
    /// order (one at a time). A batch prepared when the job then stops (pause, error) is
    /// dropped unwritten; only its reserved nonces are spent, which never repeats one.
    pub fn rewrap_run(
        &self,
        id: u64,
        batch: usize,
        keep_going: &mut dyn FnMut(&RewrapJob) -> bool,
    ) -> Result<RewrapJob, Error> {
        let row = self
            .store
            .rewrap_job_get(id)?
            .ok_or(Error::UnknownJob(id))?;
        if row.state == JobState::Completed {
            return RewrapJob::from_row(&row);
        }
        // One runner across every process sharing the store: the lease is renewed with each
        // committed batch; a runner that dies lets it lapse and another process takes over.
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        if !self.store.rewrap_job_claim(id, &self.node_id, lease_ms)? {
            let owner = self
                .store
                .rewrap_job_get(id)?
                .map(|r| r.owner)
                .unwrap_or_default();
            return Err(Error::JobLeased { id, owner });
        }
        let row = self
            .store
            .rewrap_job_get(id)?
            .ok_or(Error::UnknownJob(id))?;
        let created_at = row.created_at;
        let mut job = RewrapJob::from_row(&row)?;
        if job.state == JobState::Completed {
            return Ok(job);
        }
        self.job_transition(&mut job, JobState::Running, created_at)?;
        let batch = batch.max(1);
        let mut next = self.rewrap_prepare(&job, job.cursor, batch);
        loop {
            let prepared = match next {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.job_transition(&mut job, JobState::Completed, created_at)?;
                    return Ok(job);
                }
                Err(e) => return Err(self.job_failed(&mut job, e, created_at)),
            };
            let (target, after) = (job.clone(), prepared.last);
            let (committed, following) = std::thread::scope(|s| {
                let reader = s.spawn(|| self.rewrap_prepare(&target, after, batch));
                let committed = self.rewrap_commit(&mut job, prepared, created_at);
                let following = reader
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (committed, following)
            });
            if let Err(e) = committed {
                return Err(self.job_failed(&mut job, e, created_at));
            }
            if !keep_going(&job) {
                self.job_transition(&mut job, JobState::Paused, created_at)?;
                return Ok(job);
            }
            next = following;
        }
    }

    /// Marks the job failed (best effort: it stays resumable whether or not this write lands)
    /// and gives back the error.
    fn job_failed(&self, job: &mut RewrapJob, e: Error, created_at: i64) -> Error {
        let _ = self.job_transition(job, JobState::Failed, created_at);
        e
    }

    fn job_transition(
        &self,
        job: &mut RewrapJob,
        to: JobState,
        created_at: i64,
    ) -> Result<(), Error> {
        if !job.state.can_become(to) {
            return Err(Error::IllegalJobTransition {
                id: job.id,
                from: job.state.as_str().to_owned(),
                to: to.as_str(),
            });
        }
        let from = job.state;
        job.state = to;
        let row = job.to_row(created_at, self.now());
        if let Err(e) = self.store.rewrap_job_update(&row, from) {
            job.state = from;
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads the job's next batch after record `after` and re-encrypts it under the job's
    /// target versions; `None` when nothing is left.
    fn rewrap_prepare(
        &self,
        job: &RewrapJob,
        after: u64,
        batch: usize,
    ) -> Result<Option<Prepared>, Error> {
        let t = job.template.as_str();
        let cfg = self.template(t)?;
        let records = self.store.records_to_rewrap(
            t,
            job.target_version,
            job.target_fp_version,
            after,
            batch,
        )?;
        let Some(last) = records.last().map(|r| r.id) else {
            return Ok(None);
        };
        let data_name = format!("data/{t}");
        let fp_name = format!("fp/{t}");
        let nonces = self.take_nonces(&data_name, job.target_version, records.len())?;
        let state = self.read_state();
        let u = state.as_ref().ok_or(Error::Sealed)?;
        let target = u
            .data_key(&data_name, job.target_version)
            .ok_or(Error::Sealed)?;
        let fp_key = if job.target_fp_version > 0 {
            Some(u.ring.decryptable(&fp_name, job.target_fp_version)?)
        } else {
            None
        };
        let mut updates = Vec::with_capacity(records.len());
        for (record, nonce) in records.into_iter().zip(nonces) {
            let plaintext = self.open_record_named(u, t, &data_name, &record)?;
            let ciphertext = target.seal_with_nonce(t, record.id, &plaintext, nonce)?;
            let fingerprint = match fp_key {
                Some(key) => {
                    let (_, value) = super::tokens::decode_plaintext(&plaintext)?;
                    let canonical = zeroize::Zeroizing::new(cfg.template.canonicalize(value)?);
                    Some((
                        job.target_fp_version,
                        envelope::fingerprint(key, t, canonical.as_bytes()).to_vec(),
                    ))
                }
                None => None,
            };
            updates.push(RecordUpdate {
                id: record.id,
                old_key_version: record.key_version,
                new_key_version: job.target_version,
                ciphertext,
                fingerprint,
            });
        }
        Ok(Some(Prepared { updates, last }))
    }

    /// Writes a prepared batch and moves the job's cursor past it.
    fn rewrap_commit(
        &self,
        job: &mut RewrapJob,
        prepared: Prepared,
        created_at: i64,
    ) -> Result<(), Error> {
        let Prepared { updates, last } = prepared;
        // The cursor and the count move in the same transaction as the records; the store
        // adds to `processed` only the rows it really changed, so a replayed batch is not
        // counted twice.
        let mut next = job.clone();
        next.cursor = last;
        let done = self
            .store
            .rewrap_commit(&updates, &next.to_row(created_at, self.now()))?;
        next.processed += done;
        *job = next;
        Ok(())
    }
}

/// A batch re-encrypted and not yet committed.
struct Prepared {
    updates: Vec<RecordUpdate>,
    /// The batch's last record id: the job's cursor once it commits.
    last: u64,
}
