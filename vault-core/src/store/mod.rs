//! Storage: the [`Store`] trait and its SQLite implementation.
//!
//! Only this module writes SQL. The crypto code (keys, envelope, vault) sees rows of opaque
//! bytes: everything sensitive arrives here already encrypted or keyed-hashed, so a store can
//! never leak a plaintext value or key. [`SqliteStore`] is the implementation (its module docs
//! describe the writer thread, group commit and the reader pool); the daemon's PostgreSQL
//! backend implements the same trait, for many daemons on one vault. Both run one conformance
//! suite (`tests/tests/storage`).
//!
//! # Several processes on one store
//!
//! A store may be shared by several vaults in several processes (daemons behind a load
//! balancer). What keeps them consistent lives here, not in process memory:
//! - record ids come from a persisted counter ([`Store::allocate_ids`]);
//! - every key-table change bumps a generation ([`Store::keys_generation`]) that vaults poll to
//!   reload their key ring;
//! - a record is only inserted under key versions the table holds as active
//!   ([`StoreError::KeyNotActive`]), so a vault that has not yet seen a rotation cannot write
//!   under the old version after it was rotated;
//! - a rewrap job runs under a lease ([`Store::rewrap_job_claim`]) that its runner renews with
//!   each batch and another process takes over once it lapses.

pub mod columns;
mod ids;
pub mod sqlite;
mod types;

pub use ids::{ID_BLOCK, IdBlocks};
#[doc(hidden)]
pub use sqlite::PageLimit;
pub use sqlite::{Options, SqliteStore, Synchronous, WriterStats};
pub use types::*;

use crate::keys::State;

/// The metadata entry [`Store::probe_write`] writes.
pub const PROBE_KEY: &str = "health_probe";

/// Persistent storage for one vault. Implementations must be safe to share across threads; a
/// call may block on I/O (async callers run it on a blocking thread), and every method that
/// writes is one atomic, durable transaction.
pub trait Store: Send + Sync + 'static {
    // ----- vault metadata (vault id, root-key check record, KDF parameters, share digests) -----

    /// Reads one metadata entry.
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes several metadata entries in one transaction.
    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError>;
    /// Writes several new metadata entries in one transaction; fails with
    /// [`StoreError::Conflict`], writing nothing, if any of them exists. Vault creation uses it
    /// so that two processes creating a vault on one empty store cannot both succeed.
    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError>;
    /// Whether storage takes writes now: commits one small write, and fails with
    /// [`StoreError::Unavailable`] if it cannot or if the store knows it has no room left to
    /// grow. A daemon's health probe calls it after a write failed (a read alone would report
    /// a full disk as healthy). The default writes a metadata entry.
    fn probe_write(&self) -> Result<(), StoreError> {
        self.meta_put(&[(PROBE_KEY, b"")])
    }

    // ----- key table -----

    /// Every key version (wrapped material included) and every key name's settings.
    fn keys_load(&self) -> Result<KeyTable, StoreError>;
    /// A number that changes whenever the key table changes (create, rotate, state change,
    /// minimum version, root rotation; not nonce reservations). Read it before
    /// [`Store::keys_load`]: a change in between is then seen at the next poll.
    fn keys_generation(&self) -> Result<u64, StoreError>;
    /// Creates a key name with its first version, in one transaction. Fails with
    /// [`StoreError::Conflict`] if the name exists.
    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError>;
    /// Rotation in one transaction: inserts `new` (state `Active`) and moves version
    /// `new.version - 1` from `Active` to `DecryptOnly`. Fails with [`StoreError::Conflict`] if
    /// `new.version` exists or the previous version is not `Active` (a concurrent rotation).
    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError>;
    /// Compare-and-set of a version's state; `erase_material` sets `wrapped` to NULL (destroy).
    /// Fails with [`StoreError::Conflict`] if the current state is not `from`, and, when `to` is
    /// `retired`, if records are still stored under the version (a `data/<template>` key's
    /// version counted as in [`Store::count_by_key_version`], an `fp/<template>` key's as in
    /// [`Store::count_by_fp_version`]), checked in the same transaction. `updated_at` is set
    /// from the store's clock.
    fn key_set_state(
        &self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        erase_material: bool,
    ) -> Result<(), StoreError>;
    /// Raises a key name's minimum decryption version. Fails with [`StoreError::Conflict`] if
    /// `min` is not above the current value.
    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError>;
    /// Root-key rotation: replaces every wrapped key and the given metadata in one transaction.
    /// Fails with [`StoreError::NotFound`] if an entry names no version with material, and with
    /// [`StoreError::Conflict`] if a stored wrapped key is missing from `wraps` (it would stay
    /// under the old root key and be lost with it); nothing changes then.
    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError>;
    /// Adds `n` to a key version's persisted nonce count and returns the new total. Callers
    /// reserve before they encrypt, so a crash can only over-count.
    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError>;

    // ----- records (vaulted values) -----

    /// Reserves `n` fresh, sequential record ids. Ids are never handed out twice, even after a
    /// crash (gaps are allowed), as long as the store does not go back in time: a restored
    /// backup or lost commits hand the lost ids out again, which is why the vault never lets
    /// an id alone name a record (`NewRecord::token_check`). The caller encrypts with the id in
    /// the associated data, then inserts with [`Store::insert_records`].
    fn allocate_ids(&self, n: u64) -> Result<std::ops::Range<u64>, StoreError>;
    /// Inserts records in one transaction, with a per-row outcome: a row whose fingerprint,
    /// idempotency key or lookup already exists is not inserted and reports the existing id.
    /// Rows are checked in order (earlier rows of the same call count), idempotency key first,
    /// then fingerprint, then lookup. A row stopped by its fingerprint that carries an
    /// idempotency key binds that key (with its request hash) to the existing record, so the
    /// key answers for that record from then on. Returns after the commit. Fails as a whole with
    /// [`StoreError::Conflict`] if an id exists already or was never allocated.
    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError>;
    /// Reads records by id, in the order given (`None` where absent).
    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError>;
    /// The id holding a deterministic fingerprint under a fingerprint-key version.
    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError>;
    /// The id of a format-preserving vaulted token, by its keyed lookup hash.
    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError>;
    /// The record and request hash stored under an idempotency key (already keyed-hashed by
    /// the caller).
    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError>;
    /// Deletes records (ciphertext, fingerprint, lookup and idempotency rows) in one
    /// transaction; `true` for each id that existed.
    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError>;
    /// Deletes records whose `expires_at` is at or before `now`; returns how many.
    fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
    /// How many records of `template` are stored under data-key version `key_version`.
    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError>;
    /// How many fingerprints of `template` are stored under fingerprint-key version `fp_version`.
    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError>;

    // ----- rewrap -----

    /// Up to `limit` records of `template` with id > `after_id` whose data-key version is below
    /// `target_version` or whose fingerprint version is below `target_fp_version`, in id order.
    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// Applies a rewrap batch and saves the job's progress in one transaction. Each update is a
    /// compare-and-set on the record's current key version, so a batch replayed after a crash
    /// never double-encrypts; an update whose record is already at the new key version (and
    /// fingerprint version) is skipped. Returns how many rows were updated. The job's `state`,
    /// `cursor` and `updated_at` are saved from `job`; its stored `processed` grows by the
    /// returned count (so a replay does not count twice), and its lease is renewed for its
    /// stored length. Fails with [`StoreError::Conflict`], changing nothing, if `job.cursor` is
    /// below the saved cursor or the job's lease is held by another owner than `job.owner`
    /// (the job was taken over), [`StoreError::NotFound`] if the job is unknown.
    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError>;
    /// Reads a rewrap job.
    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError>;
    /// Lists rewrap jobs, newest first.
    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError>;
    /// Creates a rewrap job and returns its id.
    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError>;
    /// Saves a job's state: compare-and-set on `from_state`, and on the owner (the stored
    /// owner must be empty or `job.owner`). Leaving `running` releases the lease.
    fn rewrap_job_update(&self, job: &RewrapJobRow, from_state: JobState)
    -> Result<(), StoreError>;
    /// Takes (or renews) a job's lease for `owner` for `lease_ms` milliseconds by the store's
    /// clock: granted if the job is not completed and its lease is free, lapsed or already
    /// `owner`'s. Returns whether it was granted. Exactly one of several concurrent claimants
    /// wins a free lease.
    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError>;
}
