//! The client's errors: one enum for a failed call, one struct for a failed item of a batch.
//!
//! The mapping from gRPC status codes follows the contract in `proto/vault/v1/tokenizer.proto`
//! (which code a call-level failure gets) and `common.proto` (`ErrorCode`, whose numbers are
//! those of the gRPC codes). Messages come from the server, which promises never to put a value
//! in them; the client adds none.

use std::fmt;

use tonic::{Code, Status};
use vault_proto::v1 as pb;

/// Why a call failed as a whole. Match on the variant; messages are for people and logs.
///
/// Calls that fail with [`Error::Unavailable`] or [`Error::ResourceExhausted`] have already been
/// retried where that is safe (see [`crate::RetryPolicy`]); [`Error::CircuitOpen`] means the
/// client did not send the call because the daemon has been failing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Unknown template, or (single-item calls) no such token, or an expired or deleted one.
    #[error("not found: {message}")]
    NotFound {
        /// The server's explanation.
        message: String,
    },
    /// The caller's scopes do not grant this operation on this template (or this item).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The server's explanation, usually naming the missing scope.
        message: String,
    },
    /// No API key or client certificate, or one the vault does not accept.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The request or one item is malformed. `index` is the item's position in the caller's
    /// input when the failure concerns one item.
    #[error("invalid input{}: {message}", index.map(|i| format!(" (item {i})")).unwrap_or_default())]
    InvalidInput {
        /// The position of the offending item in the input, if one item is at fault.
        index: Option<usize>,
        /// What is wrong; never the value itself.
        message: String,
    },
    /// The idempotency key was already used with a different value or metadata.
    #[error("already exists: {message}")]
    AlreadyExists {
        /// The server's explanation.
        message: String,
    },
    /// The daemon could not be reached or is shutting down (after any safe retries).
    #[error("vault unavailable: {message}")]
    Unavailable {
        /// The transport's or server's explanation.
        message: String,
    },
    /// The call's deadline passed before an answer arrived. The call may or may not have taken
    /// effect on the server.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A quota or a per-key limit was hit (after any safe retries).
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// The server's explanation.
        message: String,
    },
    /// The vault is sealed: its keys are not in memory until an operator unseals it.
    #[error("vault is sealed: {message}")]
    Sealed {
        /// The server's explanation.
        message: String,
    },
    /// The call (or the item) cannot be served in the vault's current state: a pinned key
    /// version is not the active one, a key version no longer decrypts, or the template stores
    /// no record.
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// The server's explanation.
        message: String,
    },
    /// The client's circuit breaker is open: the daemon failed repeatedly and the call was not
    /// sent. Nothing was done; try again after the breaker's cool-down.
    #[error("circuit open: the vault failed repeatedly, call not sent")]
    CircuitOpen,
    /// A stored record failed authentication (tampered or corrupted).
    #[error("data loss: a stored record failed authentication")]
    DataLoss,
    /// The server failed for a reason it does not expose, or answered with a code the contract
    /// does not give this call.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: Code,
        /// The server's explanation.
        message: String,
    },
    /// The server's answer does not follow the contract (wrong number of results, an empty
    /// `oneof`). A bug in the server or a newer contract than this client knows.
    #[error("protocol violation: {message}")]
    Protocol {
        /// What did not match.
        message: String,
    },
    /// The client's configuration is unusable (bad endpoint, unreadable PEM).
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// Connecting the channel failed (DNS, TCP, TLS handshake).
    #[error("transport error")]
    Transport(#[source] tonic::transport::Error),
}

impl Error {
    /// Whether the failure is of the kind that trips the circuit breaker: the daemon is not
    /// answering (as opposed to answering with a refusal).
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        // The connection broke under the call (reset, closed, a lost response): tonic reports
        // it as UNKNOWN with the transport error as its source. gRPC calls that UNAVAILABLE, and
        // so do we, so that a call safe to repeat (an idempotency key, a read) is retried; the
        // call may have been served, which is what idempotency keys are for.
        if status.code() == Code::Unknown
            && std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>())
        {
            return Error::Unavailable {
                message: format!("connection lost during the call: {message}"),
            };
        }
        match status.code() {
            Code::NotFound => Error::NotFound { message },
            Code::PermissionDenied => Error::PermissionDenied { message },
            Code::Unauthenticated => Error::Unauthenticated,
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput {
                index: None,
                message,
            },
            Code::AlreadyExists => Error::AlreadyExists { message },
            Code::Unavailable => Error::Unavailable { message },
            Code::DeadlineExceeded => Error::DeadlineExceeded,
            Code::ResourceExhausted => Error::ResourceExhausted { message },
            // The contract gives FAILED_PRECONDITION to two call-level causes: a sealed vault
            // and a key_version hint that does not hold (tokenizer.proto, service comment). The
            // status carries no machine-readable reason, so the message tells them apart.
            Code::FailedPrecondition if message.to_ascii_lowercase().contains("sealed") => {
                Error::Sealed { message }
            }
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            Code::DataLoss => Error::DataLoss,
            code => Error::Server { code, message },
        }
    }
}

/// The class of an item's failure: `vault.v1.ErrorCode`, whose numbers are gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ItemErrorCode {
    /// The item is malformed (value does not fit the template, bad token shape, TTL of zero...).
    InvalidArgument,
    /// No such token, or it expired or was deleted.
    NotFound,
    /// The idempotency key was already used with a different value or metadata.
    AlreadyExists,
    /// The caller's scopes do not cover this item.
    PermissionDenied,
    /// A per-item limit was hit.
    ResourceExhausted,
    /// The item's key version no longer decrypts, or the template stores no record.
    FailedPrecondition,
    /// The server failed on this item for a reason it does not expose.
    Internal,
    /// The stored record failed authentication.
    DataLoss,
    /// A code this client does not know (a newer server), or none; treated as a failure.
    Unknown,
}

impl ItemErrorCode {
    fn from_wire(code: i32) -> Self {
        // Unknown values are the UNSPECIFIED case (common.proto, compatibility note).
        match pb::ErrorCode::try_from(code).unwrap_or(pb::ErrorCode::Unspecified) {
            pb::ErrorCode::InvalidArgument => Self::InvalidArgument,
            pb::ErrorCode::NotFound => Self::NotFound,
            pb::ErrorCode::AlreadyExists => Self::AlreadyExists,
            pb::ErrorCode::PermissionDenied => Self::PermissionDenied,
            pb::ErrorCode::ResourceExhausted => Self::ResourceExhausted,
            pb::ErrorCode::FailedPrecondition => Self::FailedPrecondition,
            pb::ErrorCode::Internal => Self::Internal,
            pb::ErrorCode::DataLoss => Self::DataLoss,
            pb::ErrorCode::Unspecified => Self::Unknown,
        }
    }
}

/// The failure of one item of a batch; the other items are unaffected.
///
/// Never contains the item's value or token (the server promises so, and the client adds
/// neither), so it is safe to log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ItemError {
    /// The item's position in the caller's input (across chunks of a large batch).
    pub index: usize,
    /// The class of failure.
    pub code: ItemErrorCode,
    /// A short explanation for people and logs. Not for parsing.
    pub message: String,
    /// A stable machine-readable reason (for example `TOKEN_EXPIRED`); empty when none.
    pub reason: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {}: {:?}", self.index, self.code)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl ItemError {
    pub(crate) fn from_wire(index: usize, error: pb::ItemError) -> Self {
        Self {
            index,
            code: ItemErrorCode::from_wire(error.code),
            message: error.message,
            reason: error.reason,
        }
    }

    /// The error a single-item call returns for this item's failure.
    pub(crate) fn into_call_error(self) -> Error {
        let message = self.message;
        match self.code {
            ItemErrorCode::InvalidArgument => Error::InvalidInput {
                index: None,
                message,
            },
            ItemErrorCode::NotFound => Error::NotFound { message },
            ItemErrorCode::AlreadyExists => Error::AlreadyExists { message },
            ItemErrorCode::PermissionDenied => Error::PermissionDenied { message },
            ItemErrorCode::ResourceExhausted => Error::ResourceExhausted { message },
            ItemErrorCode::FailedPrecondition => Error::FailedPrecondition { message },
            ItemErrorCode::DataLoss => Error::DataLoss,
            ItemErrorCode::Internal => Error::Server {
                code: Code::Internal,
                message,
            },
            ItemErrorCode::Unknown => Error::Server {
                code: Code::Unknown,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Check = fn(&Error) -> bool;

    #[test]
    fn status_codes_map_to_variants() {
        let cases: Vec<(Status, Check)> = vec![
            (
                Status::not_found("no template"),
                |e| matches!(e, Error::NotFound { message } if message == "no template"),
            ),
            (
                Status::permission_denied("detokenize on pan"),
                |e| matches!(e, Error::PermissionDenied { message } if message.contains("pan")),
            ),
            (Status::unauthenticated("bad key"), |e| {
                matches!(e, Error::Unauthenticated)
            }),
            (Status::invalid_argument("empty batch"), |e| {
                matches!(e, Error::InvalidInput { index: None, .. })
            }),
            (Status::already_exists("x"), |e| {
                matches!(e, Error::AlreadyExists { .. })
            }),
            (Status::unavailable("shutting down"), |e| {
                matches!(e, Error::Unavailable { .. }) && e.is_unavailable()
            }),
            (Status::deadline_exceeded("late"), |e| {
                matches!(e, Error::DeadlineExceeded)
            }),
            (Status::resource_exhausted("quota"), |e| {
                matches!(e, Error::ResourceExhausted { .. }) && !e.is_unavailable()
            }),
            (Status::failed_precondition("the vault is sealed"), |e| {
                matches!(e, Error::Sealed { .. })
            }),
            (
                Status::failed_precondition("key_version 2 is not active (3)"),
                |e| matches!(e, Error::FailedPrecondition { .. }),
            ),
            (Status::data_loss("record tampered"), |e| {
                matches!(e, Error::DataLoss)
            }),
            (Status::internal("boom"), |e| {
                matches!(
                    e,
                    Error::Server {
                        code: Code::Internal,
                        ..
                    }
                )
            }),
            (Status::unimplemented("no"), |e| {
                matches!(
                    e,
                    Error::Server {
                        code: Code::Unimplemented,
                        ..
                    }
                )
            }),
        ];
        for (i, (status, check)) in cases.into_iter().enumerate() {
            let code = status.code();
            let error = Error::from(status);
            assert!(check(&error), "case {i} ({code:?}) mapped to {error:?}");
        }
    }

    #[test]
    fn item_codes_map_from_wire_and_unknown_is_tolerated() {
        assert_eq!(ItemErrorCode::from_wire(5), ItemErrorCode::NotFound);
        assert_eq!(ItemErrorCode::from_wire(3), ItemErrorCode::InvalidArgument);
        assert_eq!(ItemErrorCode::from_wire(15), ItemErrorCode::DataLoss);
        assert_eq!(ItemErrorCode::from_wire(0), ItemErrorCode::Unknown);
        assert_eq!(ItemErrorCode::from_wire(99), ItemErrorCode::Unknown);
    }

    #[test]
    fn item_error_display_names_index_and_reason() {
        let e = ItemError::from_wire(
            1004,
            pb::ItemError {
                code: pb::ErrorCode::NotFound as i32,
                message: "token expired".into(),
                reason: "TOKEN_EXPIRED".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "item 1004: NotFound (TOKEN_EXPIRED): token expired"
        );
        assert!(matches!(e.into_call_error(), Error::NotFound { .. }));
    }

    #[test]
    fn invalid_input_display_names_the_index() {
        let e = Error::InvalidInput {
            index: Some(7),
            message: "idempotency key longer than 128 bytes".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid input (item 7): idempotency key longer than 128 bytes"
        );
    }
}
