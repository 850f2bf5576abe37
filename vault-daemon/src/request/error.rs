//! The request path's one error, [`CallError`], and the domain table that turns vault errors
//! into it: a canonical [`Code`] (the codes gRPC and Connect share), a stable reason and a
//! message. Each transport maps `Code` onto its wire in its own `status.rs` (gRPC:
//! `grpc/status.rs`), so a failure has one code whichever way it leaves.
//!
//! Why one table: a code is part of the contract (`proto/vault/v1/*.proto` says which failure
//! gets which code, and clients retry on some and not others), so it must not drift between
//! handlers. ARCHITECTURE.md ("Errors → gRPC codes") is this table in prose; keep them in step.
//!
//! Messages: `vault::Error`, `policy::Denied` and `template::Error` never contain a value (at
//! most a length and the rule that failed), so their `Display` is used as is. Storage and RNG
//! failures may carry file paths or SQLite detail that a caller has no use for: they are logged
//! here and answered with a fixed text.

use vault_core::keys::{KeyError, NotDecryptable};
use vault_core::store::StoreError;
use vault_core::vault::Error;
use vault_proto::v1::{ErrorCode, ItemError};

use crate::audit::AuditError;
use crate::policy::{DenialKind, Denied};

/// The canonical status codes (numbered as gRPC numbers them; Connect uses the same set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled.
    Cancelled = 1,
    /// Not known (an audit event's outcome when the caller may not have received it).
    Unknown = 2,
    /// The request is malformed.
    InvalidArgument = 3,
    /// The deadline passed.
    DeadlineExceeded = 4,
    /// What the request names does not exist.
    NotFound = 5,
    /// What the request creates exists.
    AlreadyExists = 6,
    /// The policy refused.
    PermissionDenied = 7,
    /// A quota, a limit or the server's capacity.
    ResourceExhausted = 8,
    /// The vault's state does not allow it (sealed, a key version's state…).
    FailedPrecondition = 9,
    /// A concurrent change; retry.
    Aborted = 10,
    /// Out of range.
    OutOfRange = 11,
    /// Not implemented.
    Unimplemented = 12,
    /// A bug or an unexpected failure (detail in the server log only).
    Internal = 13,
    /// Storage or the audit log is unavailable; retry later.
    Unavailable = 14,
    /// Stored data failed an integrity check.
    DataLoss = 15,
    /// No usable credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, by number.
    pub(crate) const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The upper-snake name, as audit events record it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The inverse of [`Code::name`] (for audit queries); unknown names are `UNKNOWN`.
    pub(crate) fn from_name(name: &str) -> Code {
        Code::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .unwrap_or(Code::Unknown)
    }
}

/// Why a call failed: what every step of the request path returns, whatever the transport.
/// Messages never carry a sensitive value (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No usable credentials.
    Unauthenticated(String),
    /// The request is malformed (which field and rule, never its value).
    InvalidArgument(String),
    /// What the request names does not exist.
    NotFound(String),
    /// What the request creates exists.
    AlreadyExists(String),
    /// The policy refused.
    PermissionDenied(String),
    /// A quota, or too many calls in flight.
    ResourceExhausted(String),
    /// The vault's state does not allow it.
    FailedPrecondition(String),
    /// A concurrent change; retry.
    Aborted(String),
    /// The deadline passed (no work started, or its result was dropped).
    DeadlineExceeded,
    /// The store failed (disk full, read-only, I/O): the path also marks storage failed.
    StorageUnavailable,
    /// The audit log could not take the event: the call failed closed.
    AuditUnavailable,
    /// Another dependency is unavailable (the caller registry).
    Unavailable(String),
    /// Stored data failed an integrity check.
    DataLoss(String),
    /// The transport does not support what the request asks of it (a compression, an HTTP
    /// version).
    Unimplemented(String),
    /// Anything else (detail logged, never sent).
    Internal(String),
}

impl CallError {
    /// The code.
    pub(crate) fn code(&self) -> Code {
        match self {
            CallError::Unauthenticated(_) => Code::Unauthenticated,
            CallError::InvalidArgument(_) => Code::InvalidArgument,
            CallError::NotFound(_) => Code::NotFound,
            CallError::AlreadyExists(_) => Code::AlreadyExists,
            CallError::PermissionDenied(_) => Code::PermissionDenied,
            CallError::ResourceExhausted(_) => Code::ResourceExhausted,
            CallError::FailedPrecondition(_) => Code::FailedPrecondition,
            CallError::Aborted(_) => Code::Aborted,
            CallError::DeadlineExceeded => Code::DeadlineExceeded,
            CallError::StorageUnavailable
            | CallError::AuditUnavailable
            | CallError::Unavailable(_) => Code::Unavailable,
            CallError::DataLoss(_) => Code::DataLoss,
            CallError::Unimplemented(_) => Code::Unimplemented,
            CallError::Internal(_) => Code::Internal,
        }
    }

    /// The message sent to the caller.
    pub(crate) fn message(&self) -> &str {
        match self {
            CallError::Unauthenticated(m)
            | CallError::InvalidArgument(m)
            | CallError::NotFound(m)
            | CallError::AlreadyExists(m)
            | CallError::PermissionDenied(m)
            | CallError::ResourceExhausted(m)
            | CallError::FailedPrecondition(m)
            | CallError::Aborted(m)
            | CallError::Unavailable(m)
            | CallError::DataLoss(m)
            | CallError::Unimplemented(m)
            | CallError::Internal(m) => m,
            CallError::DeadlineExceeded => "deadline exceeded",
            CallError::StorageUnavailable => STORAGE_UNAVAILABLE,
            CallError::AuditUnavailable => "audit log unavailable; the call was not completed",
        }
    }

    /// `INVALID_ARGUMENT`.
    pub(crate) fn invalid_argument(m: impl Into<String>) -> CallError {
        CallError::InvalidArgument(m.into())
    }

    /// `NOT_FOUND`.
    pub(crate) fn not_found(m: impl Into<String>) -> CallError {
        CallError::NotFound(m.into())
    }

    /// `ALREADY_EXISTS`.
    pub(crate) fn already_exists(m: impl Into<String>) -> CallError {
        CallError::AlreadyExists(m.into())
    }

    /// `FAILED_PRECONDITION`.
    pub(crate) fn failed_precondition(m: impl Into<String>) -> CallError {
        CallError::FailedPrecondition(m.into())
    }

    /// `RESOURCE_EXHAUSTED`.
    pub(crate) fn resource_exhausted(m: impl Into<String>) -> CallError {
        CallError::ResourceExhausted(m.into())
    }

    /// `UNIMPLEMENTED`.
    pub(crate) fn unimplemented(m: impl Into<String>) -> CallError {
        CallError::Unimplemented(m.into())
    }

    /// `INTERNAL`.
    pub(crate) fn internal(m: impl Into<String>) -> CallError {
        CallError::Internal(m.into())
    }

    /// `UNAVAILABLE`.
    pub(crate) fn unavailable(m: impl Into<String>) -> CallError {
        CallError::Unavailable(m.into())
    }

    /// A mapped vault error as a call error.
    fn of(m: Mapped) -> CallError {
        let Mapped { code, message, .. } = m;
        match code {
            Code::InvalidArgument => CallError::InvalidArgument(message),
            Code::NotFound => CallError::NotFound(message),
            Code::AlreadyExists => CallError::AlreadyExists(message),
            Code::PermissionDenied => CallError::PermissionDenied(message),
            Code::ResourceExhausted => CallError::ResourceExhausted(message),
            Code::FailedPrecondition => CallError::FailedPrecondition(message),
            Code::Aborted => CallError::Aborted(message),
            Code::DeadlineExceeded => CallError::DeadlineExceeded,
            Code::Unavailable if m.reason == "STORAGE_UNAVAILABLE" => CallError::StorageUnavailable,
            Code::Unavailable => CallError::Unavailable(message),
            Code::DataLoss => CallError::DataLoss(message),
            Code::Unauthenticated => CallError::Unauthenticated(message),
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal => CallError::Internal(message),
        }
    }
}

/// A code, a stable reason and a message for one domain error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    pub(crate) code: Code,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// The table. Every `vault::Error` the daemon can see goes through here.
pub(crate) fn map(e: &Error) -> Mapped {
    let m = |code, reason, message: String| Mapped {
        code,
        reason,
        message,
    };
    match e {
        Error::Sealed => m(Code::FailedPrecondition, "SEALED", e.to_string()),
        Error::AlreadyUnsealed => m(Code::FailedPrecondition, "ALREADY_UNSEALED", e.to_string()),
        Error::NotInitialised(_) => m(Code::FailedPrecondition, "NOT_INITIALISED", e.to_string()),
        Error::AlreadyInitialised => m(Code::AlreadyExists, "ALREADY_INITIALISED", e.to_string()),
        Error::WrongUnsealMethod { .. } => m(
            Code::FailedPrecondition,
            "WRONG_UNSEAL_METHOD",
            e.to_string(),
        ),
        Error::UnknownTemplate(_) => m(Code::NotFound, "UNKNOWN_TEMPLATE", e.to_string()),
        Error::NotSupported { .. } => m(Code::FailedPrecondition, "NOT_SUPPORTED", e.to_string()),
        Error::Template(_) => m(Code::InvalidArgument, "VALUE_FORMAT", e.to_string()),
        Error::InvalidToken(_) => m(Code::InvalidArgument, "TOKEN_FORMAT", e.to_string()),
        Error::NotFound => m(Code::NotFound, "TOKEN_NOT_FOUND", e.to_string()),
        Error::Gone(g) => m(
            Code::NotFound,
            match g {
                vault_core::vault::Gone::Used => "VOLATILE_USED",
                vault_core::vault::Gone::Expired => "VOLATILE_EXPIRED",
                vault_core::vault::Gone::Sealed => "VOLATILE_SEALED",
                vault_core::vault::Gone::OtherProcess => "VOLATILE_OTHER_PROCESS",
            },
            e.to_string(),
        ),
        Error::IdempotencyKeyReused => {
            m(Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED", e.to_string())
        }
        Error::KeyVersionRequired(_) => m(
            Code::FailedPrecondition,
            "KEY_VERSION_REQUIRED",
            e.to_string(),
        ),
        Error::Integrity => m(Code::DataLoss, "RECORD_INTEGRITY", e.to_string()),
        Error::InvalidMetadata(_) => m(Code::InvalidArgument, "METADATA", e.to_string()),
        Error::BatchTooLarge { .. } => m(Code::InvalidArgument, "BATCH_TOO_LARGE", e.to_string()),
        Error::TokenSpaceExhausted(_) => m(
            Code::ResourceExhausted,
            "TOKEN_SPACE_EXHAUSTED",
            e.to_string(),
        ),
        Error::Key(k) => map_key(k),
        Error::Store(s) => map_store(s),
        Error::VersionInUse { .. } => m(Code::FailedPrecondition, "VERSION_IN_USE", e.to_string()),
        Error::IllegalJobTransition { .. } => m(
            Code::FailedPrecondition,
            "ILLEGAL_TRANSITION",
            e.to_string(),
        ),
        Error::UnknownJob(_) => m(Code::NotFound, "UNKNOWN_JOB", e.to_string()),
        Error::JobLeased { .. } => m(Code::Aborted, "JOB_LEASED", e.to_string()),
        Error::TooManyVersions(_) => {
            m(Code::FailedPrecondition, "TOO_MANY_VERSIONS", e.to_string())
        }
        Error::Rng => internal("RNG", e),
        Error::NonceBudgetExhausted { .. } => internal("INTERNAL", e),
    }
}

fn map_key(k: &KeyError) -> Mapped {
    let m = |code, reason, message: String| Mapped {
        code,
        reason,
        message,
    };
    match k {
        // No detail: which of passphrase or shares was wrong is all the caller learns.
        KeyError::WrongRootKey => m(
            Code::PermissionDenied,
            "WRONG_ROOT_KEY",
            "unseal refused".into(),
        ),
        KeyError::InvalidShare { .. }
        | KeyError::ShareMismatch { .. }
        | KeyError::DuplicateShare { .. }
        | KeyError::NotEnoughShares { .. }
        | KeyError::SharingParameters { .. }
        | KeyError::KdfParameters { .. }
        | KeyError::RootKeyFormat { .. } => {
            m(Code::InvalidArgument, "INVALID_SECRET", k.to_string())
        }
        KeyError::IllegalTransition { .. } | KeyError::MinVersion { .. } => m(
            Code::FailedPrecondition,
            "ILLEGAL_TRANSITION",
            k.to_string(),
        ),
        KeyError::UnknownKey { .. } => m(Code::NotFound, "UNKNOWN_KEY", k.to_string()),
        KeyError::KeyExists { .. } => m(Code::AlreadyExists, "KEY_EXISTS", k.to_string()),
        KeyError::WrongPurpose { .. } => m(Code::InvalidArgument, "WRONG_PURPOSE", k.to_string()),
        KeyError::VersionNotDecryptable { reason, .. } => m(
            Code::FailedPrecondition,
            match reason {
                NotDecryptable::BelowMinimum => "KEY_VERSION_BELOW_MINIMUM",
                NotDecryptable::Retired => "KEY_VERSION_RETIRED",
                NotDecryptable::Destroyed => "KEY_VERSION_DESTROYED",
                NotDecryptable::Unknown => "KEY_VERSION_UNKNOWN",
            },
            k.to_string(),
        ),
        KeyError::Integrity | KeyError::CheckRecordFormat | KeyError::Corrupt { .. } => {
            tracing::error!(error = %k, "key table integrity");
            m(
                Code::DataLoss,
                "KEY_INTEGRITY",
                "key integrity check failed".into(),
            )
        }
        // The reason names the failing step (module, token, PIN, key), never a secret: the
        // operator unsealing needs it, and only admin:keys callers get this far.
        KeyError::Wrapper { .. } => m(Code::Unavailable, "HSM_UNAVAILABLE", k.to_string()),
        KeyError::Kdf
        | KeyError::KeyFile(_)
        | KeyError::KeyFilePermissions { .. }
        | KeyError::KeyEnvMissing { .. }
        | KeyError::UnknownState(_)
        | KeyError::UnknownPurpose(_)
        | KeyError::Rng(_) => internal("INTERNAL", k),
    }
}

/// The fixed message of a storage failure.
const STORAGE_UNAVAILABLE: &str = "storage unavailable";

fn map_store(s: &StoreError) -> Mapped {
    tracing::error!(error = %s, "storage error");
    let (code, reason, message) = match s {
        StoreError::Unavailable { .. } => (
            Code::Unavailable,
            "STORAGE_UNAVAILABLE",
            STORAGE_UNAVAILABLE,
        ),
        StoreError::Corrupt { .. } => (Code::DataLoss, "STORAGE_CORRUPT", "storage corrupt"),
        StoreError::Conflict { .. } => (
            Code::Aborted,
            "STORAGE_CONFLICT",
            "concurrent change; retry",
        ),
        StoreError::NotFound { .. } => (Code::NotFound, "NOT_FOUND", "not found"),
        // Only left after the vault's own retry: another rotation raced it.
        StoreError::KeyNotActive { .. } => (
            Code::Aborted,
            "KEY_ROTATED",
            "a key was rotated meanwhile; retry",
        ),
        StoreError::SchemaTooNew { .. }
        | StoreError::Pragma { .. }
        | StoreError::Durability { .. } => (Code::Internal, "STORAGE", "storage error"),
    };
    Mapped {
        code,
        reason,
        message: message.into(),
    }
}

fn internal(reason: &'static str, e: &dyn std::fmt::Display) -> Mapped {
    tracing::error!(error = %e, "internal error");
    Mapped {
        code: Code::Internal,
        reason,
        message: "internal error".into(),
    }
}

/// A call-level error for a vault error.
pub(crate) fn vault(e: &Error) -> CallError {
    CallError::of(map(e))
}

/// A per-item error for a vault error. Only codes listed in `ErrorCode` are sent; anything else
/// becomes `INTERNAL` (details in the log).
pub(crate) fn item(e: &Error) -> ItemError {
    let m = map(e);
    let code = match m.code {
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::NotFound => ErrorCode::NotFound,
        Code::AlreadyExists => ErrorCode::AlreadyExists,
        Code::PermissionDenied => ErrorCode::PermissionDenied,
        Code::ResourceExhausted => ErrorCode::ResourceExhausted,
        Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        Code::DataLoss => ErrorCode::DataLoss,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::Unauthenticated => ErrorCode::Internal,
    };
    ItemError {
        code: code as i32,
        message: m.message,
        reason: m.reason.into(),
    }
}

/// A record the end user does not own (`subject_matches_metadata`): answered exactly as an
/// unknown token (`NOT_FOUND`, `TOKEN_NOT_FOUND`, the same message), so that a caller acting for
/// one end user cannot learn which tokens exist for others. The refusal is logged server-side
/// (no token, no value) and counted as a failed item in the audit event.
pub(crate) fn item_denied(d: &Denied) -> ItemError {
    tracing::info!(denial = %d, "end-user subject does not own the record: answered as not found");
    item(&Error::NotFound)
}

/// A policy refusal: `PERMISSION_DENIED` naming the missing scope or failed condition, or
/// `RESOURCE_EXHAUSTED` for a quota.
pub(crate) fn denied(d: &Denied) -> CallError {
    match d.kind() {
        DenialKind::ResourceExhausted => CallError::ResourceExhausted(d.to_string()),
        DenialKind::PermissionDenied => CallError::PermissionDenied(d.to_string()),
    }
}

/// The audit log could not take the event: the call fails closed and its result is dropped.
pub(crate) fn audit(e: &AuditError) -> CallError {
    tracing::error!(error = %e, "audit log unavailable: failing the call closed");
    CallError::AuditUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_codes() {
        assert_eq!(map(&Error::Sealed).code, Code::FailedPrecondition);
        assert_eq!(map(&Error::NotFound).code, Code::NotFound);
        assert_eq!(
            map(&Error::UnknownTemplate("x".into())).code,
            Code::NotFound
        );
        assert_eq!(map(&Error::Integrity).code, Code::DataLoss);
        // A record of another end user reads exactly as an unknown token.
        let denied = Denied::SubjectMismatch {
            scope: "reveal:pan_vault".into(),
            key: "owner".into(),
        };
        assert_eq!(item_denied(&denied), item(&Error::NotFound));
        assert_eq!(
            map(&Error::Store(StoreError::unavailable(
                "/secret/path".into()
            ))),
            Mapped {
                code: Code::Unavailable,
                reason: "STORAGE_UNAVAILABLE",
                message: "storage unavailable".into()
            }
        );
        assert_eq!(
            map(&Error::Key(KeyError::WrongRootKey)).code,
            Code::PermissionDenied
        );
        let s = vault(&Error::Store(StoreError::unavailable("disk full".into())));
        assert_eq!(s, CallError::StorageUnavailable);
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i);
            assert_eq!(Code::from_name(code.name()), code);
        }
    }
}
