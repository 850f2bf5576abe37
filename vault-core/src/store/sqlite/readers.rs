//! The read connections: a small pool leased per call, so reads never wait on the writer thread.

use super::*;

/// The pool of read-only connections.
#[derive(Debug)]
pub(super) struct Readers {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl Readers {
    pub(super) fn open(path: &Path, opts: &Options) -> Result<Self, StoreError> {
        let n = opts.read_connections.max(1);
        let conns = (0..n)
            .map(|_| conn::open(path, opts, Role::Reader))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Mutex::new(conns),
            returned: Condvar::new(),
        })
    }

    /// Runs `f` on an idle connection, waiting for one if all are busy.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        // The lock only guards the Vec (pop/push), never a query, so a poisoned lock still
        // holds a consistent list.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = loop {
            if let Some(c) = idle.pop() {
                break c;
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(idle);
        let lease = Lease {
            pool: self,
            conn: Some(conn),
        };
        match lease.conn.as_ref() {
            Some(c) => f(c).map_err(StoreError::from),
            None => Err(StoreError::unavailable("read connection lost".into())),
        }
    }

    /// Runs `f` inside one read transaction, so several statements see one snapshot.
    pub(super) fn snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            c.execute_batch("BEGIN")?;
            let r = f(c);
            // A read transaction has nothing to commit; ending it releases the snapshot.
            let end = c.execute_batch("COMMIT");
            let v = r?;
            end?;
            Ok(v)
        })
    }
}

/// Gives a connection back to the pool on drop, also when `f` panics.
pub(super) struct Lease<'a> {
    pool: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
            self.pool.returned.notify_one();
        }
    }
}
