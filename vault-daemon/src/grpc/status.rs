//! gRPC's mapping table: the request path's [`Code`] onto `grpc-status`, and a [`CallError`]
//! onto a `tonic::Status`. One exhaustive `match`, so a new code cannot leave as `INTERNAL` by
//! accident; the domain table (which failure gets which code) is `request/error.rs`.

use tonic::Status;

use crate::request::error::{CallError, Code};

/// The gRPC code of a canonical code.
pub(crate) fn code(c: Code) -> tonic::Code {
    match c {
        Code::Ok => tonic::Code::Ok,
        Code::Cancelled => tonic::Code::Cancelled,
        Code::Unknown => tonic::Code::Unknown,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Aborted => tonic::Code::Aborted,
        Code::OutOfRange => tonic::Code::OutOfRange,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::DataLoss => tonic::Code::DataLoss,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
    }
}

/// The status a failed call is answered with.
pub(crate) fn status(e: &CallError) -> Status {
    Status::new(code(e.code()), e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_agree_with_grpc() {
        for c in Code::ALL {
            assert_eq!(code(c) as i32, c as i32, "{c:?}");
        }
    }
}
