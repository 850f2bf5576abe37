//! The key hierarchy: the root key and its sources ([`root`]), named and versioned keys wrapped
//! under it ([`wrap`](mod@wrap), [`KeyRing`]), the key-version lifecycle ([`State`]) and the GCM nonce
//! budget ([`nonces`]). See ARCHITECTURE.md, "Key hierarchy".

mod keyring;
pub mod nonces;
pub mod root;
mod state;
pub mod wrap;

use crate::secret::RngError;

pub use keyring::{KeyRing, StateChange, VersionInfo};
pub use state::{Purpose, State, transition};
pub use wrap::{WrapContext, unwrap, wrap};

/// Why a key version cannot decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDecryptable {
    /// Below the key name's minimum decryption version.
    BelowMinimum,
    /// Retired: nothing is stored under it any more.
    Retired,
    /// Destroyed: its material is erased.
    Destroyed,
    /// No such version.
    Unknown,
}

impl std::fmt::Display for NotDecryptable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BelowMinimum => "below the minimum decryption version",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
            Self::Unknown => "no such version",
        })
    }
}

/// Errors from the key hierarchy. Messages never contain key bytes, share bytes or passphrases;
/// crypto failures ([`KeyError::Integrity`], [`KeyError::WrongRootKey`]) carry no detail.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The root key does not open the vault's check record.
    #[error("wrong root key")]
    WrongRootKey,
    /// A wrapped key failed authentication (tampered, or moved to another name/version/purpose).
    #[error("wrapped key failed its integrity check")]
    Integrity,
    /// A share is malformed or its checksum is wrong (a typing mistake).
    #[error("invalid share: {reason}")]
    InvalidShare {
        /// The rule that failed.
        reason: &'static str,
    },
    /// A well-formed share that does not belong to this vault's share set.
    #[error("share {index} does not belong to this share set")]
    ShareMismatch {
        /// The share's index (public: printed on the share).
        index: u8,
    },
    /// The same share index was given twice.
    #[error("share {index} given twice")]
    DuplicateShare {
        /// The share's index.
        index: u8,
    },
    /// Fewer shares than the threshold.
    #[error("{have} share(s) given, {need} needed")]
    NotEnoughShares {
        /// Shares given.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// Splitting parameters out of range (need 2 ≤ m ≤ n ≤ 255).
    #[error("cannot split into {threshold}-of-{count} shares: need 2 <= m <= n <= 255")]
    SharingParameters {
        /// m.
        threshold: usize,
        /// n.
        count: usize,
    },
    /// Stored KDF parameters are malformed or out of bounds.
    #[error("invalid key-derivation parameters: {reason}")]
    KdfParameters {
        /// The rule that failed.
        reason: &'static str,
    },
    /// Argon2 failed (e.g. out of memory).
    #[error("key derivation failed")]
    Kdf,
    /// A raw root key is not 32 bytes of raw data or 64 hex digits.
    #[error("root key is malformed: {reason}")]
    RootKeyFormat {
        /// The rule that failed.
        reason: &'static str,
    },
    /// The root-key file could not be read.
    #[error("cannot read the root-key file: {0}")]
    KeyFile(#[source] std::io::Error),
    /// The root-key file is readable or writable by group or others.
    #[error("root-key file mode {mode:o} gives access to group or others; chmod 600 or 400")]
    KeyFilePermissions {
        /// The file's permission bits.
        mode: u32,
    },
    /// The environment variable holding the root key is missing or not UTF-8.
    #[error("environment variable {name} is not set")]
    KeyEnvMissing {
        /// Variable name.
        name: String,
    },
    /// The device that wraps the root key (an HSM) failed or refused: library, token, PIN or
    /// key. The reason names what failed, never a PIN or key bytes.
    #[error("root key wrapping device: {reason}")]
    Wrapper {
        /// What failed.
        reason: String,
    },
    /// The root-key check record is malformed.
    #[error("root-key check record is malformed")]
    CheckRecordFormat,
    /// A key-version state change outside the lifecycle.
    #[error("illegal key state transition from {from} to {to}")]
    IllegalTransition {
        /// Current state.
        from: State,
        /// Requested state.
        to: State,
    },
    /// A state string from storage that is not a state.
    #[error("unknown key state {0:?}")]
    UnknownState(String),
    /// A purpose string from storage that is not a purpose.
    #[error("unknown key purpose {0:?}")]
    UnknownPurpose(String),
    /// No key by that name.
    #[error("no key named {name:?}")]
    UnknownKey {
        /// Key name.
        name: String,
    },
    /// A key by that name exists already.
    #[error("a key named {name:?} exists")]
    KeyExists {
        /// Key name.
        name: String,
    },
    /// The key's purpose is not the one the caller needs.
    #[error("key {name:?} has purpose {actual}, not {expected}")]
    WrongPurpose {
        /// Key name.
        name: String,
        /// Purpose needed.
        expected: Purpose,
        /// Purpose stored.
        actual: Purpose,
    },
    /// The version exists but may not decrypt.
    #[error("key {name:?} version {version} cannot decrypt: {reason}")]
    VersionNotDecryptable {
        /// Key name.
        name: String,
        /// Version.
        version: u32,
        /// Why.
        reason: NotDecryptable,
    },
    /// The minimum decryption version may only be raised (to above the current one), and never
    /// above the active version.
    #[error(
        "key {name:?}: minimum decryption version {requested} refused (current {current}; it \
         must rise, to at most the active version)"
    )]
    MinVersion {
        /// Key name.
        name: String,
        /// Current minimum.
        current: u32,
        /// Requested minimum.
        requested: u32,
    },
    /// The key table is inconsistent (no active version, material missing, duplicate rows).
    #[error("key table is inconsistent: {reason}")]
    Corrupt {
        /// What is wrong (names and versions only).
        reason: String,
    },
    /// The OS random number generator failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}
