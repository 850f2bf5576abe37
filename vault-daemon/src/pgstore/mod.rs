//! The PostgreSQL store: many daemons, one vault.
//!
//! [`PgStore`] implements `vault-core`'s [`Store`] trait on PostgreSQL with `tokio-postgres` and a
//! `deadpool-postgres` pool. It lives in the daemon crate, not in `vault-core`, because the
//! library carries no network code; the crypto code does not change: rows arrive already
//! encrypted or keyed-hashed, as with SQLite.
//!
//! # Why tokio-postgres and deadpool (not sqlx)
//! - The daemon already runs tokio; tokio-postgres is the protocol client the `postgres` and
//!   `deadpool` ecosystems build on, with statement caching and pipelining, and no compile-time
//!   database (sqlx's checked macros need a live server or an offline cache at build time).
//! - deadpool is a small pool with timeouts on waiting and connecting; both map to
//!   [`StoreError::Unavailable`] so a vanished database fails calls quickly (fail closed).
//!
//! # The sync trait on an async client
//! [`Store`] is synchronous (the vault runs on blocking threads). The store owns a small tokio
//! runtime (two workers) where connections live; each call is spawned there and the calling
//! thread waits for its result on a channel. So it works from any thread, inside another
//! runtime's blocking pool (the daemon) or not (tests, `vaultctl`).
//!
//! # Many daemons
//! What the trait documents for shared stores (`vault_core::store` module docs) is done in the
//! database:
//! - record ids: a counter row advanced by `UPDATE … RETURNING` in its own transaction, in
//!   blocks of [`vault_core::store::ID_BLOCK`] (65,536) cached per store
//!   ([`vault_core::store::IdBlocks`], shared with SQLite), so ids are unique across every
//!   daemon with no other coordination (a row lock held for one statement per block);
//! - inserts take a shared advisory lock per key version they write under and refuse a
//!   non-active one; a state change takes it exclusively, so a rotation and a stale daemon's
//!   insert are serialized (advisory rather than `FOR SHARE`: a row lock writes the key row and
//!   WAL on every insert);
//! - records are counted per key version through an index, not SQLite's counts table, whose
//!   rows every insert from every daemon would update;
//! - the key-table generation is a counter row bumped in every key-table transaction;
//! - rewrap leases use the database's clock (`clock_timestamp()`), so daemons' clocks may
//!   differ.
//!
//! # Durability
//! A call returns after `COMMIT`. The store refuses a server whose `fsync` is off or whose
//! `synchronous_commit` is `off` or `local`-less (it checks at connect): an acknowledged token
//! is committed, as with SQLite's `synchronous=FULL`.

mod connect;
mod errors;
pub mod import;
mod insert;
mod keytx;
mod rows;
mod schema;
mod store;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use self::connect::{Client, get};
use self::errors::map_pg;
use self::insert::{idempotency_hit, insert_plain, insert_records};
use self::keytx::{
    Tx, bump_key_generation, count_fp_version, count_key_version, insert_version, lock_key_version,
    not_found_or_conflict, owned_meta, put_meta,
};
use self::rows::{
    JOB_COLUMNS, NOW_MS, RECORD_COLUMNS, i64_of, job_from, key_state_of, record_from, u32_of,
    u64_of,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use vault_core::store::{
    Cause, IdBlocks, IdempotencyHit, InsertOutcome, KeyNameRow, KeyTable, KeyVersionRow, NewRecord,
    Record, RecordUpdate, RewrapJobRow, Store, StoreError,
};

/// How long a call waits for a pooled connection or a new one before failing as unavailable.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one store call may take in all before failing as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings beside the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (per daemon).
    pub pool_size: usize,
    /// Schema holding the vault's tables (created if missing); `None` uses the URL's
    /// `search_path` (normally `public`). One database can hold several vaults this way.
    pub schema: Option<String>,
    /// CA certificate (PEM) that signs the server's certificate, for `sslmode=require`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            schema: None,
            ca_file: None,
        }
    }
}

/// A vault's storage on PostgreSQL.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Ids reserved from the shared counter and not yet handed out.
    ids: IdBlocks,
}

/// Reads the connection pool's state without a query (for metrics): a clone of the pool's
/// handle, so it outlives nothing and holds no connection.
#[derive(Clone)]
pub struct PoolProbe(Pool);

impl std::fmt::Debug for PoolProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolProbe").field(&self.state()).finish()
    }
}

/// The connection pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// `[database] pool_size`.
    pub max: usize,
    /// Connections open (idle or lent out).
    pub open: usize,
    /// Open connections waiting to be lent.
    pub idle: usize,
    /// Calls waiting for a connection.
    pub waiting: usize,
}

impl PoolProbe {
    /// The pool now.
    pub fn state(&self) -> PoolState {
        let s = self.0.status();
        PoolState {
            max: s.max_size,
            open: s.size,
            idle: s.available,
            waiting: s.waiting,
        }
    }
}

impl PgStore {
    /// A probe of this store's pool.
    pub fn pool_probe(&self) -> PoolProbe {
        PoolProbe(self.pool.clone())
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped on an async thread (daemon shutdown), where dropping a
        // runtime blocks and panics: let its threads go in the background instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a URL names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

trait PgResult<T> {
    fn pg(self) -> Result<T, StoreError>;
}
