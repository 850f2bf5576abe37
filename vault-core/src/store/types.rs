//! Row types shared by every [`super::Store`] implementation. All bytes here are ciphertext,
//! wrapped keys or keyed hashes: nothing in a row is secret in the clear.

use crate::keys::State;

/// What lies under a [`StoreError`]: the I/O, SQLite or database-client error it came from, kept
/// as its [`source`](std::error::Error::source) so a caller can inspect it (an `io::ErrorKind`, a
/// SQLite result code) rather than parse a message. Never a stored value: the PostgreSQL backend
/// keeps only the SQLSTATE and constraint of a server error, whose own words can quote stored
/// bytes.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from storage. Messages carry no stored bytes.
///
/// A message is complete by itself: where there is a [`Cause`], its words are already in
/// `what` (as `what: cause`), as in the daemon's start-up errors, so a log line of `{}` says
/// everything and `source()` is there for code that needs the cause's type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be read or written (I/O error, disk full, read-only, locked).
    #[error("storage unavailable: {what}")]
    Unavailable {
        /// What failed, in words that quote no stored bytes.
        what: String,
        /// The error underneath, if it came from one.
        #[source]
        source: Option<Cause>,
    },
    /// The database file is damaged (failed integrity check, truncated, not a database).
    #[error("storage corrupt: {what}")]
    Corrupt {
        /// What is damaged.
        what: String,
        /// The error underneath, if it came from one.
        #[source]
        source: Option<Cause>,
    },
    /// The database was written by a newer version of this software.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A compare-and-set or uniqueness condition failed (concurrent change, illegal state).
    #[error("storage conflict: {what}")]
    Conflict {
        /// Which condition failed.
        what: String,
        /// The error underneath, if it came from one (a constraint violation).
        #[source]
        source: Option<Cause>,
    },
    /// A row names something that does not exist. Always the store's own finding: nothing
    /// lies underneath.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A record was to be written under a key version that is no longer active (another
    /// process rotated the key): the writer reloads its key ring and retries.
    #[error("key {name} version {version} is no longer active")]
    KeyNotActive {
        /// Key name (`data/<template>` or `fp/<template>`).
        name: String,
        /// The version the row was written under.
        version: u32,
    },
    /// A connection setting read back differently from what was set (e.g. WAL refused by the
    /// filesystem): the store refuses to run on weaker guarantees than configured.
    #[error("pragma {pragma} is {found}, expected {expected}")]
    Pragma {
        /// Pragma name.
        pragma: &'static str,
        /// Value that was set.
        expected: String,
        /// Value read back.
        found: String,
    },
    /// A database server whose durability settings would let an acknowledged write be lost
    /// (PostgreSQL with `fsync` or `synchronous_commit` off): the store refuses to use it.
    #[error("server setting {setting} is {found}, expected {expected}")]
    Durability {
        /// Setting name.
        setting: &'static str,
        /// Values accepted.
        expected: String,
        /// Value found.
        found: String,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] with no cause (yet: see [`StoreError::because`]).
    pub fn unavailable(what: String) -> StoreError {
        StoreError::Unavailable { what, source: None }
    }

    /// [`StoreError::Corrupt`] with no cause (yet).
    pub fn corrupt(what: String) -> StoreError {
        StoreError::Corrupt { what, source: None }
    }

    /// [`StoreError::Conflict`] with no cause (yet).
    pub fn conflict(what: String) -> StoreError {
        StoreError::Conflict { what, source: None }
    }

    /// [`StoreError::NotFound`].
    pub fn not_found(what: String) -> StoreError {
        StoreError::NotFound { what }
    }

    /// The same error, caused by `cause`: its words are appended to the message (`what:
    /// cause`) and it becomes the `source()`. Variants without a cause field are returned as
    /// they are.
    pub fn because(mut self, cause: impl Into<Cause>) -> StoreError {
        let cause = cause.into();
        if let StoreError::Unavailable { what, source }
        | StoreError::Corrupt { what, source }
        | StoreError::Conflict { what, source } = &mut self
        {
            what.push_str(": ");
            what.push_str(&cause.to_string());
            *source = Some(cause);
        }
        self
    }

    /// The same error, its message prefixed with the step it happened in (`place: what`),
    /// its kind and source kept: a pool reporting a refused connection stays `Unavailable`
    /// without saying "storage unavailable" twice.
    pub fn within(mut self, place: &str) -> StoreError {
        if let StoreError::Unavailable { what, .. }
        | StoreError::Corrupt { what, .. }
        | StoreError::Conflict { what, .. }
        | StoreError::NotFound { what } = &mut self
        {
            what.insert_str(0, ": ");
            what.insert_str(0, place);
        }
        self
    }

    /// The same error with `cause` as its `source()`, the message unchanged (for a message
    /// that already is the cause's words).
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> StoreError {
        if let StoreError::Unavailable { source, .. }
        | StoreError::Corrupt { source, .. }
        | StoreError::Conflict { source, .. } = &mut self
        {
            *source = Some(cause.into());
        }
        self
    }
}

/// One key name and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNameRow {
    /// e.g. `data/pan`.
    pub name: String,
    /// `fpe`, `data`, `fingerprint` or `token`.
    pub purpose: String,
    /// Versions below this no longer decrypt.
    pub min_decrypt_version: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// One version of a key: its state and its material wrapped under the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyVersionRow {
    /// Key name.
    pub name: String,
    /// 1, 2, …
    pub version: u32,
    /// Where the version is in its lifecycle (stored by [`State::as_str`]).
    pub state: State,
    /// AES-256-GCM wrap of the material; `None` once destroyed.
    pub wrapped: Option<Vec<u8>>,
    /// Nonces used (reserved) under this version.
    pub nonce_count: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last state change.
    pub updated_at: i64,
}

impl std::fmt::Debug for KeyVersionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersionRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("nonce_count", &self.nonce_count)
            .finish_non_exhaustive()
    }
}

/// The whole key table.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    /// Key names.
    pub names: Vec<KeyNameRow>,
    /// Every version of every name.
    pub versions: Vec<KeyVersionRow>,
}

/// A record to insert. `id` comes from [`super::Store::allocate_ids`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Record id (also bound into the ciphertext's associated data).
    pub id: u64,
    /// Template name.
    pub template: String,
    /// Data-key version the ciphertext is under.
    pub key_version: u32,
    /// Envelope (sealed value, see `envelope`).
    pub ciphertext: Vec<u8>,
    /// Unix seconds after which the token is gone; `None` never expires.
    pub expires_at: Option<i64>,
    /// Non-sensitive metadata (JSON text), as given by the caller.
    pub metadata: Option<String>,
    /// Deterministic mode: (fingerprint-key version, HMAC fingerprint). Unique per template.
    pub fingerprint: Option<(u32, Vec<u8>)>,
    /// Format-preserving vaulted tokens: keyed hash of the token. Unique per template.
    pub lookup: Option<Vec<u8>>,
    /// The caller's idempotency key and what it was used for. The key is unique.
    pub idempotency: Option<Idempotency>,
    /// Opaque tokens: the random check value inside the record's token, so that a token names
    /// this record and no later one that a rolled-back store gives the same id (see
    /// `vault::opaque`). Not secret without the token key. `None` for formatted tokens, which
    /// are found by their lookup hash and confirmed against the sealed token.
    pub token_check: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRecord")
            .field("id", &self.id)
            .field("template", &self.template)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// An idempotency key as the store keeps it: both parts are keyed hashes (the vault's `lookup`
/// key), so neither the key, the value nor the parameters are stored in the clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// Keyed hash of (caller, template, idempotency key). Unique.
    pub key: Vec<u8>,
    /// Keyed hash of the request the key was first used with (value, metadata, TTL). A retry
    /// with the same key must carry the same request hash to be answered with the first token.
    pub request: [u8; 32],
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").finish_non_exhaustive()
    }
}

/// A record found under an idempotency key, with the request hash stored beside it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyHit {
    /// The record the key created.
    pub record_id: u64,
    /// The request hash stored with the key (all zeros for a row written before request
    /// hashes existed: it never matches, so such a key fails closed).
    pub request: [u8; 32],
}

impl std::fmt::Debug for IdempotencyHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyHit")
            .field("record_id", &self.record_id)
            .finish_non_exhaustive()
    }
}

/// What happened to one row of [`super::Store::insert_records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored under its own id.
    Inserted,
    /// Not stored: the fingerprint exists, under this id.
    ExistingFingerprint(u64),
    /// Not stored: the idempotency key exists, for this record and request hash.
    ExistingIdempotency(IdempotencyHit),
    /// Not stored: the lookup hash (token) exists; the caller draws another token.
    LookupCollision,
}

/// A stored record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Record id.
    pub id: u64,
    /// Template name.
    pub template: String,
    /// Data-key version.
    pub key_version: u32,
    /// Envelope.
    pub ciphertext: Vec<u8>,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Metadata (JSON text).
    pub metadata: Option<String>,
    /// Fingerprint-key version and fingerprint, if deterministic.
    pub fingerprint: Option<(u32, Vec<u8>)>,
    /// Lookup hash, if the token is format-preserving.
    pub lookup: Option<Vec<u8>>,
    /// The check value inside the record's opaque token; `None` for formatted tokens and for
    /// records stored before check values existed (their tokens are legacy tokens).
    pub token_check: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("template", &self.template)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// One record's rewrap: a compare-and-set from `old_key_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordUpdate {
    /// Record id.
    pub id: u64,
    /// Version the row must still be under, or the update is skipped.
    pub old_key_version: u32,
    /// New data-key version.
    pub new_key_version: u32,
    /// New envelope.
    pub ciphertext: Vec<u8>,
    /// New fingerprint (version, bytes), when deterministic.
    pub fingerprint: Option<(u32, Vec<u8>)>,
}

impl std::fmt::Debug for RecordUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordUpdate")
            .field("id", &self.id)
            .field("old_key_version", &self.old_key_version)
            .field("new_key_version", &self.new_key_version)
            .finish_non_exhaustive()
    }
}

/// A rewrap job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created, not started.
    Pending,
    /// Running (or was running when the process stopped: resumable).
    Running,
    /// Stopped on request; resumable.
    Paused,
    /// Nothing left under older versions.
    Completed,
    /// Stopped by an error; resumable.
    Failed,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// The state a stored name names (`None` for a name no build wrote).
    pub fn from_name(name: &str) -> Option<JobState> {
        [
            JobState::Pending,
            JobState::Running,
            JobState::Paused,
            JobState::Completed,
            JobState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// A rewrap job's persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapJobRow {
    /// Job id (0 before creation).
    pub id: u64,
    /// Template whose records are rewrapped.
    pub template: String,
    /// Data-key version records are moved to.
    pub target_version: u32,
    /// Fingerprint-key version fingerprints are moved to.
    pub target_fp_version: u32,
    /// Where the job is (stored by [`JobState::as_str`]).
    pub state: JobState,
    /// Last record id processed (the job resumes after it).
    pub cursor: u64,
    /// Records rewrapped so far.
    pub processed: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Who holds the job's lease (a vault's node id); empty when free. When it lapses is the
    /// store's business (set by [`super::Store::rewrap_job_claim`], renewed by
    /// [`super::Store::rewrap_commit`], on the store's clock).
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use std::error::Error;

    #[test]
    fn because_appends_the_cause_and_keeps_it_as_source() {
        let io = std::io::Error::other("disk on fire");
        let e = StoreError::unavailable("opening the log".into()).because(io);
        assert_eq!(
            e.to_string(),
            "storage unavailable: opening the log: disk on fire"
        );
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn caused_by_keeps_the_message_and_within_prefixes_it() {
        let io = std::io::Error::other("busy");
        let e = StoreError::conflict("busy".into())
            .caused_by(io)
            .within("claiming a job");
        assert!(matches!(e, StoreError::Conflict { .. }));
        assert!(e.to_string().ends_with("claiming a job: busy"), "{e}");
        assert!(e.source().is_some());
        // NotFound has no cause to keep: it is returned as it is.
        let nf = StoreError::not_found("token".into()).because(std::io::Error::other("x"));
        assert!(nf.source().is_none());
    }
}
