//! The Connect protocol's mapping table: the request path's [`Code`] onto a Connect error code
//! and the HTTP status the Connect specification gives it (connectrpc.com/docs/protocol, "Error
//! Codes"), and a [`CallError`] onto the error body. One exhaustive `match`, as in
//! `grpc/status.rs`.

use http::StatusCode;

use crate::request::error::{CallError, Code};

/// The Connect code name and HTTP status of a canonical code.
pub(crate) fn code(c: Code) -> (&'static str, StatusCode) {
    match c {
        // Never an error; listed so the table is exhaustive.
        Code::Ok => ("unknown", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Cancelled => ("canceled", client_closed()),
        Code::Unknown => ("unknown", StatusCode::INTERNAL_SERVER_ERROR),
        Code::InvalidArgument => ("invalid_argument", StatusCode::BAD_REQUEST),
        Code::DeadlineExceeded => ("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT),
        Code::NotFound => ("not_found", StatusCode::NOT_FOUND),
        Code::AlreadyExists => ("already_exists", StatusCode::CONFLICT),
        Code::PermissionDenied => ("permission_denied", StatusCode::FORBIDDEN),
        Code::ResourceExhausted => ("resource_exhausted", StatusCode::TOO_MANY_REQUESTS),
        Code::FailedPrecondition => ("failed_precondition", StatusCode::BAD_REQUEST),
        Code::Aborted => ("aborted", StatusCode::CONFLICT),
        Code::OutOfRange => ("out_of_range", StatusCode::BAD_REQUEST),
        Code::Unimplemented => ("unimplemented", StatusCode::NOT_IMPLEMENTED),
        Code::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        Code::DataLoss => ("data_loss", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED),
    }
}

/// 499, "Client Closed Request": not in `http`'s constants.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The HTTP status and the Connect error body (`{"code": …, "message": …}`) of a failed call.
/// The message is the request path's, which never carries a submitted value.
pub(crate) fn error(e: &CallError) -> (StatusCode, Vec<u8>) {
    let (name, status) = code(e.code());
    let body = serde_json::json!({ "code": name, "message": e.message() });
    (status, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the Connect specification, written out once more by hand.
    #[test]
    fn http_statuses_are_the_specifications() {
        let expected = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (c, name, status) in expected {
            assert_eq!(
                code(c),
                (name, StatusCode::from_u16(status).unwrap()),
                "{c:?}"
            );
        }
    }
}
