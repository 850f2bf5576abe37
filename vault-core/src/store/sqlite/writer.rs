//! The writer thread: owns the only write connection and commits jobs in groups.
//!
//! Callers send a job over a bounded channel and block on a one-shot reply channel (async code
//! calls the store from a blocking thread). The thread takes the first waiting job, drains
//! whatever else is already queued (up to [`MAX_GROUP`]), and runs them all in one `BEGIN
//! IMMEDIATE` transaction, each inside its own `SAVEPOINT` so a failing job is rolled back alone.
//! One `COMMIT` (one WAL fsync under `synchronous=FULL`) then makes the whole group durable and
//! only then is each caller answered: a reply of `Ok` means committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::PageLimit;
use super::conn::{Failure, map_sql};
use crate::store::StoreError;

/// Most jobs committed in one transaction; bounds the latency a job adds to its group.
const MAX_GROUP: usize = 128;
/// Jobs that may wait in the channel before senders block (back-pressure).
const QUEUE: usize = 1024;

/// Counters exposed for metrics and for the tests that check group commit really groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Jobs run (committed or failed).
    pub jobs: u64,
    /// Jobs sent but not yet picked up by the writer thread.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    jobs: AtomicU64,
    /// Jobs in the channel: counted after `send` returns, so a job counted here is really
    /// waiting (the writer's `picked` may briefly run ahead; `queued` saturates at 0).
    sent: AtomicU64,
    picked: AtomicU64,
}

/// A job's result after it ran inside its savepoint: whether it failed (its savepoint is then
/// rolled back), and how to answer its caller once the group's commit result is known.
struct Outcome {
    failed: bool,
    finish: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// One unit of work for the writer thread.
trait Job: Send {
    /// Runs inside a savepoint of the group's transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Outcome;
    /// Answers the caller without running (the transaction could not be started).
    fn abort(self: Box<Self>, err: StoreError);
}

struct Task<F, T> {
    work: F,
    reply: SyncSender<Result<T, StoreError>>,
}

impl<F, T> Job for Task<F, T>
where
    F: FnOnce(&Connection) -> Result<T, Failure> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Outcome {
        let reply = self.reply;
        match (self.work)(conn) {
            Ok(value) => Outcome {
                failed: false,
                finish: Box::new(move |commit| {
                    // The caller may have gone away; nothing to do then.
                    let _ = reply.send(commit.map(|()| value));
                }),
            },
            Err(e) => {
                let e = StoreError::from(e);
                Outcome {
                    failed: true,
                    finish: Box::new(move |_| {
                        let _ = reply.send(Err(e));
                    }),
                }
            }
        }
    }

    fn abort(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

/// Handle to the writer thread. Dropping it closes the channel and joins the thread, which
/// closes the write connection (SQLite checkpoints the WAL when the last connection closes).
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<SyncSender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the thread; it owns `conn` from now on.
    #[cfg(test)]
    pub(crate) fn spawn(conn: Connection) -> Result<Self, StoreError> {
        Self::spawn_with_limit(conn, None)
    }

    /// Starts the thread with a test-only page limit ([`PageLimit`]).
    pub(crate) fn spawn_with_limit(
        conn: Connection,
        limit: Option<PageLimit>,
    ) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::sync_channel::<Box<dyn Job>>(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("vault-store-writer".into())
            .spawn(move || run(conn, receiver, &c, limit.as_ref()))
            .map_err(|e| StoreError::unavailable("cannot start writer thread".into()).because(e))?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            counters,
        })
    }

    /// Runs `work` in the next group transaction and returns its result once committed.
    pub(crate) fn submit<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || StoreError::unavailable("writer thread stopped".into());
        let sender = self.sender.as_ref().ok_or_else(stopped)?;
        if sender.send(Box::new(Task { work, reply })).is_err() {
            return Err(stopped());
        }
        self.counters.sent.fetch_add(1, Ordering::SeqCst);
        answer.recv().map_err(|_| stopped())?
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::SeqCst),
            jobs: self.counters.jobs.load(Ordering::SeqCst),
            queued: self
                .counters
                .sent
                .load(Ordering::SeqCst)
                .saturating_sub(self.counters.picked.load(Ordering::SeqCst)),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(t) = self.thread.take() {
            // A panic in the writer thread already failed its callers; nothing more to report.
            let _ = t.join();
        }
    }
}

/// SQLite's own ceiling for `max_page_count` (what "no limit" restores).
const NO_PAGE_LIMIT: u64 = 4_294_967_294;

fn run(
    conn: Connection,
    jobs: Receiver<Box<dyn Job>>,
    counters: &Counters,
    limit: Option<&PageLimit>,
) {
    let mut applied = 0;
    while let Ok(first) = jobs.recv() {
        if let Some(l) = limit {
            let want = l.get();
            if want != applied {
                let pages = if want == 0 { NO_PAGE_LIMIT } else { want };
                // A failure leaves the previous limit; the next group tries again.
                if conn.pragma_update(None, "max_page_count", pages).is_ok() {
                    applied = want;
                }
            }
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        counters
            .picked
            .fetch_add(group.len() as u64, Ordering::SeqCst);
        counters
            .jobs
            .fetch_add(group.len() as u64, Ordering::SeqCst);
        commit_group(&conn, group, counters);
    }
}

/// Runs a group of jobs in one transaction (see the module docs).
fn commit_group(conn: &Connection, group: Vec<Box<dyn Job>>, counters: &Counters) {
    let mut pending = group.into_iter();
    // Loops only when SQLite aborted the transaction under us (disk full, I/O error): the jobs
    // that ran in it are failed and the rest get a fresh transaction.
    loop {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = map_sql(e);
            for job in pending {
                job.abort(copy_of(&e, sql_words(&e)));
            }
            return;
        }
        let mut done: Vec<Outcome> = Vec::new();
        let mut broken = None;
        for job in pending.by_ref() {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                let e = map_sql(e);
                job.abort(copy_of(&e, sql_words(&e)));
                broken = Some(e);
                break;
            }
            let outcome = job.run(conn);
            let end = if outcome.failed {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
            } else {
                conn.execute_batch("RELEASE job")
            };
            let lost = conn.is_autocommit();
            done.push(outcome);
            if let Err(e) = end {
                broken = Some(map_sql(e));
                break;
            }
            if lost {
                broken = Some(StoreError::unavailable(
                    "transaction aborted by a storage error".into(),
                ));
                break;
            }
        }
        let result = match broken {
            Some(e) => Err(e),
            None => conn.execute_batch("COMMIT").map_err(map_sql),
        };
        match result {
            Ok(()) => {
                counters.transactions.fetch_add(1, Ordering::SeqCst);
                for o in done {
                    (o.finish)(Ok(()));
                }
                return;
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    // Best effort: if even ROLLBACK fails SQLite rolls back when the journal
                    // is next read (hot journal / WAL frames without a commit marker).
                    let _ = conn.execute_batch("ROLLBACK");
                }
                for o in done {
                    (o.finish)(Err(same_kind(&e)));
                }
            }
        }
        if pending.len() == 0 {
            return;
        }
    }
}

/// A copy of a group's failure for each of its jobs (`StoreError` is not `Clone`).
fn same_kind(e: &StoreError) -> StoreError {
    copy_of(e, format!("group transaction failed: {e}"))
}

/// The message of a [`map_sql`] error (SQLite's own words).
fn sql_words(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { what, .. }
        | StoreError::Corrupt { what, .. }
        | StoreError::Conflict { what, .. } => what.clone(),
        other => other.to_string(),
    }
}

/// `e`'s kind with message `what` and no source (the one source stays with the original).
fn copy_of(e: &StoreError, what: String) -> StoreError {
    match e {
        StoreError::Corrupt { .. } => StoreError::corrupt(what),
        StoreError::Conflict { .. } => StoreError::conflict(what),
        _ => StoreError::unavailable(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_after_a_failed_job_still_commit() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        let w = Writer::spawn(conn).unwrap();
        w.submit(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?))
            .unwrap();
        let err = w
            .submit(|c| {
                c.execute("INSERT INTO t VALUES (2)", [])?;
                Ok(c.execute("INSERT INTO t VALUES (1)", [])?)
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        let n: i64 = w
            .submit(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(
            n, 1,
            "the failed job's first insert was rolled back with its savepoint"
        );
        let st = w.stats();
        assert_eq!((st.jobs, st.queued), (3, 0));
    }
}
