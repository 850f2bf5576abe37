use crate::keys::KeyError;
use crate::store::StoreError;
use crate::template;

/// Errors from the vault. Messages never contain a value, a token's plaintext or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vault is sealed: unseal it first.
    #[error("the vault is sealed")]
    Sealed,
    /// The vault is already unsealed.
    #[error("the vault is already unsealed")]
    AlreadyUnsealed,
    /// The vault file has no vault in it, or one was asked to be created over an existing one.
    #[error("vault not initialised: {0}")]
    NotInitialised(&'static str),
    /// A vault already exists in this store.
    #[error("a vault already exists in this store")]
    AlreadyInitialised,
    /// The unseal method does not match how the vault was created.
    #[error("this vault is unsealed with {expected}, not {given}")]
    WrongUnsealMethod {
        /// How the vault is sealed.
        expected: &'static str,
        /// What was offered.
        given: &'static str,
    },
    /// No template of that name is configured.
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    /// The operation does not apply to this template's mode (e.g. delete on an FPE template).
    #[error("{operation} is not supported for template {template:?} ({mode})")]
    NotSupported {
        /// The operation.
        operation: &'static str,
        /// The template.
        template: String,
        /// Its mode.
        mode: &'static str,
    },
    /// The value or token does not fit the template.
    #[error(transparent)]
    Template(#[from] template::Error),
    /// The token is not one this vault issued for this template (malformed or forged).
    #[error("not a token of template {0:?}")]
    InvalidToken(String),
    /// No record for this token: never issued, deleted or expired.
    #[error("token not found")]
    NotFound,
    /// A volatile token that no longer reveals, and why ([`super::Gone`]).
    #[error("volatile token gone: {}", .0.as_str())]
    Gone(super::Gone),
    /// The idempotency key was used before, by this caller on this template, with another
    /// value, metadata or TTL. Which of them differs is not said (only keyed hashes are
    /// compared), and nothing was stored.
    #[error("idempotency key already used with a different request")]
    IdempotencyKeyReused,
    /// Several key versions could have made this FPE token and nothing says which: pass the
    /// key version.
    #[error("several key versions are decryptable for template {0:?}: pass a key version")]
    KeyVersionRequired(String),
    /// A stored record or key failed its integrity check. No detail, by design.
    #[error("integrity check failed")]
    Integrity,
    /// Metadata is not valid or too large.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(&'static str),
    /// A batch is larger than [`super::MAX_BATCH`].
    #[error("batch of {len} items exceeds the limit of {max}")]
    BatchTooLarge {
        /// Items given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A format-preserving token space is (nearly) full: no free random token was found.
    #[error("no free token found for template {0:?}: the token space is too small")]
    TokenSpaceExhausted(String),
    /// A key operation was refused (lifecycle, unknown key, wrong root key, shares…).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Storage failed; the operation did not happen.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key version still has records: rewrap first.
    #[error("{count} records are still under {name} version {version}: rewrap first")]
    VersionInUse {
        /// Key name.
        name: String,
        /// Version.
        version: u32,
        /// Records left.
        count: u64,
    },
    /// A rewrap job cannot make this transition.
    #[error("rewrap job {id}: cannot go from {from} to {to}")]
    IllegalJobTransition {
        /// Job id.
        id: u64,
        /// Current state.
        from: String,
        /// Requested state.
        to: &'static str,
    },
    /// No rewrap job with that id.
    #[error("no rewrap job {0}")]
    UnknownJob(u64),
    /// Another process holds the job's lease (it is running there, or ran there until
    /// recently): it is taken over once the lease lapses.
    #[error("rewrap job {id} is leased to {owner}")]
    JobLeased {
        /// Job id.
        id: u64,
        /// The lease holder's node id.
        owner: String,
    },
    /// The OS random number generator failed.
    #[error("the operating system's random number generator failed")]
    Rng,
    /// A data-key version has sealed as many values as GCM allows (SP 800-38D §8.3): rotate.
    #[error("{name} version {version} has used its GCM nonce budget: rotate the key")]
    NonceBudgetExhausted {
        /// Key name.
        name: String,
        /// Version.
        version: u32,
    },
    /// A PAN FPE key may keep at most 9 decryptable versions (the token's version slot).
    #[error("template {0:?} already has 9 decryptable FPE key versions: retire one first")]
    TooManyVersions(String),
}

impl From<crate::secret::RngError> for Error {
    fn from(_: crate::secret::RngError) -> Self {
        Error::Rng
    }
}

impl Error {
    /// Whether the error concerns only the item it was raised for (bad value, unknown token),
    /// as opposed to the whole call (sealed, storage down).
    pub fn is_item_error(&self) -> bool {
        matches!(
            self,
            Error::Template(_)
                | Error::InvalidToken(_)
                | Error::NotFound
                | Error::Gone(_)
                | Error::KeyVersionRequired(_)
                | Error::Integrity
                | Error::InvalidMetadata(_)
                | Error::TokenSpaceExhausted(_)
        )
    }
}
