//! The one table that turns domain errors into gRPC status codes (and per-item error codes).
//!
//! Why one module: a code is part of the contract (`proto/vault/v1/*.proto` says which failure
//! gets which code, and clients retry on some and not others), so it must not drift between
//! handlers. ARCHITECTURE.md ("Errors → gRPC codes") is this table in prose; keep them in step.
//!
//! Messages: `vault::Error`, `policy::Denied` and `template::Error` never contain a value (at
//! most a length and the rule that failed), so their `Display` is used as is. Storage and RNG
//! failures may carry file paths or SQLite detail that a caller has no use for: they are logged
//! here and answered with a fixed text.

use tonic::{Code, Status};
use vault_core::keys::{KeyError, NotDecryptable};
use vault_core::store::StoreError;
use vault_core::vault::Error;
use vault_proto::v1::{ErrorCode, ItemError};

use crate::audit::AuditError;
use crate::policy::{DenialKind, Denied};

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
        _ => internal("INTERNAL", e),
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
                _ => "KEY_VERSION_UNKNOWN",
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
        _ => internal("INTERNAL", k),
    }
}

/// The fixed message of a storage-unavailable status; [`is_storage_unavailable`] reads it back
/// so the request path can flip health without another error channel.
const STORAGE_UNAVAILABLE: &str = "storage unavailable";

/// Whether a call-level status came from a storage failure (disk full, read-only, I/O).
pub(crate) fn is_storage_unavailable(s: &Status) -> bool {
    s.code() == Code::Unavailable && s.message() == STORAGE_UNAVAILABLE
}

fn map_store(s: &StoreError) -> Mapped {
    tracing::error!(error = %s, "storage error");
    let (code, reason, message) = match s {
        StoreError::Unavailable(_) => (
            Code::Unavailable,
            "STORAGE_UNAVAILABLE",
            STORAGE_UNAVAILABLE,
        ),
        StoreError::Corrupt(_) => (Code::DataLoss, "STORAGE_CORRUPT", "storage corrupt"),
        StoreError::Conflict(_) => (
            Code::Aborted,
            "STORAGE_CONFLICT",
            "concurrent change; retry",
        ),
        StoreError::NotFound(_) => (Code::NotFound, "NOT_FOUND", "not found"),
        // Only left after the vault's own retry: another rotation raced it.
        StoreError::KeyNotActive { .. } => (
            Code::Aborted,
            "KEY_ROTATED",
            "a key was rotated meanwhile; retry",
        ),
        _ => (Code::Internal, "STORAGE", "storage error"),
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

/// A call-level status for a vault error.
pub(crate) fn status(e: &Error) -> Status {
    let m = map(e);
    Status::new(m.code, m.message)
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
        _ => ErrorCode::Internal,
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
pub(crate) fn denied(d: &Denied) -> Status {
    match d.kind() {
        DenialKind::ResourceExhausted => Status::resource_exhausted(d.to_string()),
        _ => Status::permission_denied(d.to_string()),
    }
}

/// The audit log could not take the event: the call fails closed and its result is dropped.
pub(crate) fn audit(e: &AuditError) -> Status {
    tracing::error!(error = %e, "audit log unavailable: failing the call closed");
    Status::unavailable("audit log unavailable; the call was not completed")
}

/// Authentication failures.
pub(crate) fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(why.to_owned())
}

/// The upper-snake name of a code, as audit events record it.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
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

/// The inverse of [`code_name`] (for audit queries); unknown names are `UNKNOWN`.
pub(crate) fn code_from_name(name: &str) -> Code {
    (0..=16)
        .map(Code::from_i32)
        .find(|c| code_name(*c) == name)
        .unwrap_or(Code::Unknown)
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
            map(&Error::Store(StoreError::Unavailable(
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
        let s = status(&Error::Store(StoreError::Unavailable("disk full".into())));
        assert!(is_storage_unavailable(&s));
        assert!(!is_storage_unavailable(&Status::unavailable("audit")));
        for c in 0..=16 {
            let code = Code::from_i32(c);
            assert_eq!(code_from_name(code_name(code)), code);
        }
    }
}
